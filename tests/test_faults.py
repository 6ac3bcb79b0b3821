"""Faults: pygeoapi restarts, killed job processes (docs/reliability.md, parts 1-2)."""

from __future__ import annotations

import logging
import os
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from conftest import pygeoapi_config, start_pygeoapi
from faults import (
    FAST_HEARTBEAT,
    FINISHED,
    children,
    kill,
    restart,
    status_of,
    until,
    with_environment,
    workers,
)
from servers import start_server
from workers import start_process_worker

from pygeoapi_prefect.cli.main import cli
from pygeoapi_prefect.execution.heartbeat import HEARTBEAT_ENV
from pygeoapi_prefect.prefect.server import free_port

logger = logging.getLogger(__name__)

#: One worker process, so that jobs queue and the worker is easy to find.
#: A short drain, so that a SIGTERM interrupts the long job of these tests.
ONE_WORKER = {"max_workers": 1, "instance": "faults-test-instance", "shutdown_grace": 1}
#: A killed server's queued jobs are taken over within 5 + 1 s (default 60 + 30).
QUICK_RECOVERY = {"lease_seconds": 5, "scan_seconds": 1}


@pytest.fixture(autouse=True)
def _default_zombie_automation(prefect_api):
    """The tests shorten the shared server's zombie timeout: put the default back after."""
    yield
    from pygeoapi_prefect.config import HeartbeatConfig
    from pygeoapi_prefect.execution.heartbeat import ensure_zombie_automation

    ensure_zombie_automation(prefect_api, HeartbeatConfig().zombie_timeout)


def _alive(pid: int) -> bool:
    # A killed process may linger as a zombie until reaped: that one is dead.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _submit(server, n, seconds):
    ids = []
    for _ in range(n):
        response = server.execute("sleep", {"seconds": seconds}, asynchronous=True)
        assert response.status_code == 201, response.text
        ids.append(response.json()["jobID"])
    return ids


def _all_finished(server, job_ids):
    documents = {job_id: status_of(server, job_id) for job_id in job_ids}
    if all(d.get("status") in FINISHED for d in documents.values()):
        return documents
    return None


def _heartbeats_since(prefect_api, job_id: str, since: datetime) -> int:
    found = prefect_api.request(
        "POST",
        "/events/filter",
        json={
            "filter": {
                "occurred": {"since": since.isoformat()},
                "event": {"name": ["pygeoapi.job.heartbeat"]},
                "resource": {"id": [f"prefect.flow-run.{job_id}"]},
            },
            "limit": 50,
        },
    ).json()
    return len(found["events"])


def test_restart_runs_queued_jobs_and_keeps_results(pygeoapi_factory, prefect_server, prefect_api):
    """SIGTERM, then SIGKILL, of a pygeoapi with queued and running jobs."""
    server = pygeoapi_factory(
        manager={"local": ONE_WORKER, "heartbeat": FAST_HEARTBEAT, "recovery": QUICK_RECOVERY}
    )
    earlier = server.execute("hello-world", {"name": "kept"}, asynchronous=True).json()["jobID"]
    server.wait_for(earlier, "successful")
    kept = server.client.get(f"/jobs/{earlier}/results", params={"f": "json"}).json()

    # SIGTERM: the running job is interrupted (failed, with a message), the
    # queued ones wait in Prefect and run after the restart.
    first = _submit(server, 1, 30)
    server.wait_for(first[0], "running")
    first += _submit(server, 3, 1)
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(30)
    server = restart(server, prefect_server.api_url)
    try:
        done = until(lambda: _all_finished(server, first), 60, "jobs after a SIGTERM restart")
        assert done[first[0]]["status"] == "failed"
        assert "pygeoapi instance running the job was stopped" in done[first[0]]["message"]
        assert [done[j]["status"] for j in first[1:]] == ["successful"] * 3

        # SIGKILL: nothing of the server runs its shutdown. The running job's
        # worker process finishes it and records it itself; the queued ones
        # are taken back by the next start.
        second = _submit(server, 1, 8)
        server.wait_for(second[0], "running")
        second += _submit(server, 2, 1)
        servers = [server.process.pid, *children(server.process.pid)]
        for pid in servers:
            kill(pid)
        server.process.wait(10)
        until(lambda: not any(_alive(pid) for pid in servers[1:]), 10, "the server's processes")
        alone = datetime.now(UTC)
        server.client.close()
        server = restart(server, prefect_server.api_url)
        done = until(lambda: _all_finished(server, second), 60, "jobs after a SIGKILL restart")
        assert [done[j]["status"] for j in second] == ["successful"] * 3
        # Its server gone, the job sent its heartbeats itself (relay.py).
        until(
            lambda: _heartbeats_since(prefect_api, second[0], alone) >= 2,
            30,
            "heartbeats of the job that outlived its server",
        )
        for job_id in second:
            assert (
                server.client.get(f"/jobs/{job_id}/results", params={"f": "json"}).status_code
                == 200
            )
        assert server.client.get(f"/jobs/{earlier}/results", params={"f": "json"}).json() == kept
    finally:
        server.stop()


def test_killed_local_worker_fails_the_job(pygeoapi_factory, pygeoapi, prefect_api):
    """A worker process killed mid-job; then its pygeoapi killed too (heartbeats stop)."""
    server = pygeoapi_factory(
        manager={"local": ONE_WORKER, "heartbeat": FAST_HEARTBEAT, "recovery": QUICK_RECOVERY}
    )
    (job_id,) = _submit(server, 1, 60)
    server.wait_for(job_id, "running")
    # Running is recorded just before the job's process is forked.
    (worker,) = until(lambda: workers(server.process.pid), 30, "the job's process")
    kill(worker)
    document = server.wait_for(job_id, "failed", timeout=30)
    assert "worker process running the job died" in document["message"]

    # Now nobody is left to notice: the pygeoapi and its worker die together.
    (job_id,) = _submit(server, 1, 60)
    server.wait_for(job_id, "running")
    time.sleep(1.5)  # past the first heartbeat
    running = workers(server.process.pid)
    # The server's processes first, and gone, before the job's: a gunicorn
    # worker still alive for a moment would see its job process die and
    # record that itself (the first half's case), which is not this one.
    servers = [server.process.pid, *children(server.process.pid)]
    for pid in servers:
        kill(pid)
    server.process.wait(10)
    until(lambda: not any(_alive(pid) for pid in servers[1:]), 10, "the server's processes gone")
    for pid in running:
        kill(pid)
    killed = time.monotonic()
    run = until(
        lambda: (r := prefect_api.read_flow_run(job_id))["state_type"] != "RUNNING" and r,
        90,
        "the zombie job failed",
        every=0.5,
    )
    logger.info("zombie job detected %.1f s after the kill", time.monotonic() - killed)
    assert run["state_type"] == "CRASHED"
    assert "stopped sending heartbeats" in run["state"]["message"]
    # As any pygeoapi on this Prefect server reports it.
    document = status_of(pygeoapi, job_id)
    assert document["status"] == "failed"
    assert "stopped sending heartbeats" in document["message"]


def test_killed_flow_run_under_a_prefect_worker_fails_the_job(
    prefect_server, prefect_api, tmp_path, monkeypatch
):
    """A deployed process's run: its `prefect worker` and flow run process both SIGKILLed."""
    pool = "pygeoapi-faults-pool"
    prefect_api.request("POST", "/work_pools/", json={"name": pool, "type": "process"})
    worker = start_process_worker(prefect_server.api_url, pool, tmp_path, {HEARTBEAT_ENV: "1"})
    try:
        sleep = {"name": "pygeoapi_test_processes.SleepProcessor"}
        config = pygeoapi_config(free_port(), tmp_path / "results", processes={"sleep": sleep})
        config_path = tmp_path / "deploy-config.yml"
        config_path.write_text(yaml.safe_dump(config))
        monkeypatch.setenv("PREFECT_API_URL", prefect_server.api_url)
        result = CliRunner().invoke(
            cli,
            ["deploy-process-as-flow", "sleep", "--config", str(config_path)]
            + ["--deployment-name", "faults", "--work-pool", pool],
            catch_exceptions=False,
        )
        assert result.exit_code == 0, result.output
        server = start_pygeoapi(
            tmp_path / "pygeoapi",
            prefect_server.api_url,
            processes={"sleep": {**sleep, "deployment": "sleep/faults"}},
            manager={"results": {"url": str(tmp_path / "results")}, "heartbeat": FAST_HEARTBEAT},
        )
        try:
            response = server.execute("sleep", {"seconds": 120}, asynchronous=True)
            assert response.status_code == 201, response.text
            job_id = response.json()["jobID"]
            server.wait_for(job_id, "running", timeout=90)
            time.sleep(1.5)  # past the first heartbeat
            runs = with_environment("PREFECT__FLOW_RUN_ID", job_id)
            assert runs, "the flow run process was not found"
            os.killpg(worker.pid, signal.SIGKILL)
            for pid in runs:
                kill(pid)
            killed = time.monotonic()
            document = server.wait_for(job_id, "failed", timeout=90)
            logger.info("zombie flow run detected %.1f s after the kill", time.monotonic() - killed)
            assert "stopped sending heartbeats" in document["message"]
        finally:
            server.stop()
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)


@pytest.mark.parametrize("kind", ["gunicorn", "uvicorn"])
def test_sigterm_to_a_server_with_workers_interrupts_their_running_jobs(
    tmp_path, prefect_server, prefect_api, kind
):
    # The master passes SIGTERM to its workers; each closes its engine (uvicorn:
    # the app's lifespan, as its workers end without atexit): the running job
    # is killed after local.shutdown_grace and recorded failed, not left to
    # run on alone and end successful.
    server = start_server(kind, tmp_path, prefect_server.api_url, manager={"local": ONE_WORKER})
    try:
        (job_id,) = _submit(server, 1, 30)
        server.wait_for(job_id, "running")
        processes = children(server.process.pid)
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(30) == 0
        until(lambda: not any(_alive(pid) for pid in processes), 10, "the server's processes")
    finally:
        server.stop()
    run = prefect_api.request("GET", f"/flow_runs/{job_id}").json()
    assert run["state"]["type"] == "FAILED", run["state"]
    assert "pygeoapi instance running the job was stopped" in run["state"]["message"]


@pytest.mark.parametrize("lifespan", ["auto", "off"])
def test_uvicorn_without_the_apps_lifespan_is_warned_of(tmp_path, prefect_server, lifespan):
    # With --lifespan off no close would run in a uvicorn worker (it runs no
    # atexit either): the first job request says so, once; with the lifespan
    # on, nothing is said.
    server = start_server(
        "uvicorn", tmp_path, prefect_server.api_url, workers=1, extra=("--lifespan", lifespan)
    )
    try:
        for _ in range(2):
            assert server.client.get("/jobs").status_code == 200
    finally:
        server.stop()
    warnings = server.log_path.read_text().count("did not run the app's lifespan")
    assert warnings == (1 if lifespan == "off" else 0)
