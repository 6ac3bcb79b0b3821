"""Real Prefect process workers for the tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from conftest import Pygeoapi, pygeoapi_config, server_env, start_pygeoapi

from pygeoapi_prefect.cli.main import cli
from pygeoapi_prefect.prefect.api import PrefectAPI
from pygeoapi_prefect.prefect.server import free_port


def start_process_worker(
    prefect_api_url: str, pool: str, folder: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`prefect worker start --pool POOL --type process` in its own session.

    It polls every second, runs in ``folder`` and writes ``folder/worker.log``;
    ``env`` adds to its environment.
    """
    environment = server_env(prefect_api_url, folder / "prefect-home")
    environment["PREFECT_WORKER_QUERY_SECONDS"] = "1"
    environment |= env or {}
    command = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool]
    with (folder / "worker.log").open("wb") as log:
        return subprocess.Popen(
            [*command, "--type", "process"],
            env=environment,
            cwd=folder,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@contextlib.contextmanager
def deployed_pygeoapi(
    prefect_server: Any,
    tmp_path_factory: pytest.TempPathFactory,
    *,
    pool: str,
    name: str,
    processes: dict[str, Any],
    manager: dict[str, Any] | None = None,
) -> Iterator[Pygeoapi]:
    """Process pool ``pool`` with a worker, ``processes`` deployed as ``<id>/<name>``, and a
    pygeoapi serving them from those deployments (``manager``: its manager settings).

    The worker runs in ``<tmp>/<name>-deployments`` and logs to ``worker.log`` there.
    """
    folder = tmp_path_factory.mktemp(f"{name}-deployments")
    api = PrefectAPI(prefect_server.api_url, timeout=10)
    try:
        api.request("POST", "/work_pools/", json={"name": pool, "type": "process"})
    finally:
        api.close()
    worker = start_process_worker(prefect_server.api_url, pool, folder)
    try:
        results = {"results": {"url": str(folder / "results")}}
        config = pygeoapi_config(
            free_port(), folder / "results", processes=processes, manager=manager
        )
        config_path = folder / "deploy-config.yml"
        config_path.write_text(yaml.safe_dump(config))
        runner = CliRunner()
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("PREFECT_API_URL", prefect_server.api_url)
            for process_id in processes:
                deploy = ["deploy-process-as-flow", process_id, "--config", str(config_path)]
                result = runner.invoke(
                    cli,
                    [*deploy, "--deployment-name", name, "--work-pool", pool],
                    catch_exceptions=False,
                )
                assert result.exit_code == 0, result.output
                config["resources"][process_id]["processor"] = {
                    **config["resources"][process_id]["processor"],
                    "deployment": f"{process_id}/{name}",
                }
        server = start_pygeoapi(
            tmp_path_factory.mktemp(f"{name}-pygeoapi"),
            prefect_server.api_url,
            processes={pid: r["processor"] for pid, r in config["resources"].items()},
            manager={**(manager or {}), **results},
        )
        try:
            yield server
        finally:
            server.stop()
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)
