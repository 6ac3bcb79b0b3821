"""Scale-out set-up for the tests: Prefect on PostgreSQL, two pygeoapi instances, two workers.

All on loopback, as docs/scale-out.md describes it for real machines: one
Prefect server on PostgreSQL (``prefect_on_postgres``), a process work pool
with two ``pygeoapi-prefect warm-worker`` processes (each with ``--limit``,
so that neither takes every run), the ``sleep`` process deployed there
(``--warm``), and two ``pygeoapi-prefect serve`` instances with the same
config, sharing one result store on S3 (moto's server).

Fixture (import it with ``postgres``'s fixtures to use it):

- ``scale_out``: the running set-up (session scope), a :class:`ScaleOut`.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import S3, Pygeoapi, pygeoapi_config, server_env, start_pygeoapi

from pygeoapi_prefect.cli.deploy import DeployRequest, deploy_process
from pygeoapi_prefect.prefect.api import PrefectAPI
from pygeoapi_prefect.prefect.server import PrefectServer, free_port, stop_process_group

logger = logging.getLogger(__name__)

__all__ = ["DEPLOYMENT", "POOL", "WORKERS", "ScaleOut", "running", "scale_out"]

POOL = "scale-out-pool"
#: The deployment of the ``sleep`` process that runs on the workers.
DEPLOYMENT = "sleep/scale-out"
WORKERS = ("worker-a", "worker-b")
#: Runs one worker takes at once: with two workers, runs spread over both.
WORKER_LIMIT = 2
PROCESSES: dict[str, str | dict[str, Any]] = {
    "hello-world": "HelloWorld",
    "sleep": "pygeoapi_test_processes.SleepProcessor",
}


@dataclass
class ScaleOut:
    """The running scale-out set-up."""

    prefect: PrefectServer
    api: PrefectAPI
    instances: tuple[Pygeoapi, Pygeoapi]
    workers: dict[str, subprocess.Popen[bytes]]
    folder: Path

    def worker_of(self, flow_run_ids: list[str]) -> dict[str, list[str]]:
        """Which worker ran each flow run, from Prefect's events.

        A worker that runs a flow run emits ``prefect.worker.executed-flow-run``,
        its own name as the resource and the flow run among the related
        resources. (Both workers may start to submit the same run; the one
        Prefect turns away emits nothing.) Events are stored shortly after
        they happen: runs not listed yet may show up on a later call.
        """
        ran: dict[str, list[str]] = {}
        for start in range(0, len(flow_run_ids), 50):  # 50: Prefect's page size
            batch = [f"prefect.flow-run.{run_id}" for run_id in flow_run_ids[start : start + 50]]
            page = self.api.request(
                "POST",
                "/events/filter",
                json={
                    "filter": {
                        "event": {"name": ["prefect.worker.executed-flow-run"]},
                        "any_resource": {"id": batch},
                    },
                    "limit": 50,
                },
            ).json()
            for event in page["events"]:
                worker = event["resource"]["prefect.resource.name"]
                for related in event["related"]:
                    if related["prefect.resource.role"] == "flow-run":
                        run_id = related["prefect.resource.id"].removeprefix("prefect.flow-run.")
                        ran.setdefault(run_id, []).append(worker)
        return ran


def _start_worker(api_url: str, folder: Path, name: str) -> subprocess.Popen[bytes]:
    env = server_env(api_url, folder / f"{name}-home")
    with (folder / f"{name}.log").open("wb") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pygeoapi_prefect.cli",
                "warm-worker",
                "--pool",
                POOL,
                "--name",
                name,
                "--limit",
                str(WORKER_LIMIT),
                "--socket",
                str(folder / f"{name}.sock"),
            ],
            env=env,
            cwd=folder,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def _wait_for_workers(api: PrefectAPI, names: tuple[str, ...], folder: Path) -> None:
    deadline = time.monotonic() + 180
    while True:
        online = api.request("POST", f"/work_pools/{POOL}/workers/filter", json={}).json()
        if set(names) <= {worker["name"] for worker in online}:
            return
        if time.monotonic() > deadline:
            logs = {name: (folder / f"{name}.log").read_text()[-1500:] for name in names}
            raise RuntimeError(f"workers did not come online: {logs}")
        time.sleep(0.3)


def _stop(process: subprocess.Popen[bytes]) -> None:
    stop_process_group(process, timeout=30)


@contextmanager
def running(prefect: PrefectServer, folder: Path, results: dict[str, Any]) -> Iterator[ScaleOut]:
    """The set-up on ``prefect``'s server, its files in ``folder``, results in ``results``.

    Args:
        prefect: a running Prefect server (on PostgreSQL for scale-out; the
            benchmark also runs it on SQLite to compare).
        folder: an empty folder for configs, logs and deployment code.
        results: the manager's ``results`` config, the same for all.
    """
    api_url = prefect.api_url
    api = PrefectAPI(api_url, timeout=30)
    api.request("POST", "/work_pools/", json={"name": POOL, "type": "process"})
    workers = {name: _start_worker(api_url, folder, name) for name in WORKERS}
    # Prefect on PostgreSQL takes parallel writes. The generous timeout is for
    # this 2-core machine, where everything shares the cores with the tests.
    manager = {"results": results, "api_write_concurrency": 4, "api_timeout": 30}
    instances: list[Pygeoapi] = []
    try:
        config = pygeoapi_config(
            free_port(), folder / "unused", processes=PROCESSES, manager=manager
        )
        config_path = folder / "deploy-config.yml"
        config_path.write_text(yaml.safe_dump(config))

        def deploy() -> str:
            with pytest.MonkeyPatch.context() as patch:
                patch.setenv("PREFECT_API_URL", api_url)
                return deploy_process(
                    DeployRequest(
                        config_path=config_path,
                        process_id="sleep",
                        deployment_name="scale-out",
                        work_pool=POOL,
                        code_dir=folder / "deployments",
                        warm=True,
                    )
                )

        processes = {**PROCESSES, "sleep": {"name": PROCESSES["sleep"], "deployment": DEPLOYMENT}}

        def instance(index: int) -> Pygeoapi:
            server = start_pygeoapi(
                folder / f"pygeoapi-{index}",
                api_url,
                processes=processes,
                manager=manager,
                timeout=180,
            )
            instances.append(server)
            return server

        started = time.monotonic()
        # The deployment is needed by the first job, not to start serving.
        with ThreadPoolExecutor(3) as pool:
            deployed = pool.submit(deploy)
            list(pool.map(instance, (1, 2)))
        assert deployed.result() == DEPLOYMENT
        logger.info("pygeoapi instances up in %.1f s", time.monotonic() - started)
        _wait_for_workers(api, WORKERS, folder)
        logger.info("workers up in %.1f s", time.monotonic() - started)
        instances.sort(key=lambda server: server.config_path)
        yield ScaleOut(prefect, api, (instances[0], instances[1]), workers, folder)
    finally:
        # All at once: each takes a few seconds to shut down.
        stops = [server.stop for server in instances]
        stops += [lambda process=process: _stop(process) for process in workers.values()]
        with ThreadPoolExecutor(len(stops)) as pool:
            list(pool.map(lambda stop: stop(), stops))
        api.close()


@pytest.fixture(scope="session")
def scale_out(
    prefect_on_postgres: PrefectServer, s3: S3, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ScaleOut]:
    """Prefect on PostgreSQL, two warm workers, two pygeoapi instances, results on S3."""
    results = {"url": f"s3://{s3.bucket}/scale-out", "storage_options": s3.storage_options}
    with running(prefect_on_postgres, tmp_path_factory.mktemp("scale-out"), results) as set_up:
        yield set_up
