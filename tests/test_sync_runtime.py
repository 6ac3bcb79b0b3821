"""Sync jobs under faults: bounded answers in a Prefect outage, heartbeats while recorded."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from faults import FAST_HEARTBEAT, kill, until, with_environment
from servers import start_server
from tcp_proxy import TcpProxy

from pygeoapi_prefect.jobs.runs import job_tags
from pygeoapi_prefect.prefect.api import PrefectAPI

PROCESSES = {"sleep": "pygeoapi_test_processes.SleepProcessor"}
API_TIMEOUT = 3
#: How long the sync job of the outage test runs: long enough for its
#: Running record to land first on a loaded machine (5 s was overrun once,
#: the first job of a freshly booted worker, during a slow CI run).
SECONDS = 8


def _running_sleeps(api: PrefectAPI) -> set[str]:
    flow_runs = {"tags": {"all_": job_tags("sleep")}, "state": {"type": {"any_": ["RUNNING"]}}}
    return {r["id"] for r in api.filter_flow_runs(flow_runs, sort="ID_DESC", limit=200, offset=0)}


def test_sync_job_answers_within_its_bound_when_prefect_goes_away(prefect_server, tmp_path):
    proxy = TcpProxy(prefect_server.port)
    server = start_server(
        "gunicorn",
        tmp_path,
        f"{proxy.url}/api",
        workers=2,
        processes=PROCESSES,
        manager={"api_timeout": API_TIMEOUT, "heartbeat": {"install_automation": False}},
    )
    try:
        api = PrefectAPI(prefect_server.api_url, timeout=10)
        before = _running_sleeps(api)
        with ThreadPoolExecutor(1) as pool:
            started = time.monotonic()
            answer = pool.submit(server.execute, "sleep", {"seconds": SECONDS})
            # Recorded Running after 0.25 s (later on a busy machine): then Prefect goes away.
            until(lambda: _running_sleeps(api) - before, SECONDS - 1, "the sync job recorded")
            proxy.cut()
            response = answer.result()
            took = time.monotonic() - started
        # Its own seconds, then at most api_timeout on Prefect (and slack for a busy machine).
        assert took < SECONDS + API_TIMEOUT + 3, took
        assert response.status_code == 200, response.text
        assert response.json()["value"]["beats"] > 0
        job_url = response.headers["Location"]
        assert server.client.get(job_url, params={"f": "json"}).status_code == 503
        proxy.restore()
        document = until(
            lambda: (
                (r := server.client.get(job_url, params={"f": "json"})).status_code == 200
                and r.json()["status"] == "successful"
                and r.json()
            ),
            90,
            "the deferred record written once Prefect is back",
        )
        assert document["progress"] == 100
        results = server.client.get(f"{job_url}/results", params={"f": "json"})
        assert results.status_code == 200
    finally:
        proxy.cut()
        server.stop()


def test_a_recorded_sync_job_of_a_killed_server_fails_by_heartbeat(prefect_server, tmp_path):
    server = start_server(
        "gunicorn",
        tmp_path,
        prefect_server.api_url,
        workers=1,
        processes=PROCESSES,
        manager={"heartbeat": FAST_HEARTBEAT},
    )
    try:
        with ThreadPoolExecutor(1) as pool:
            pool.submit(server.execute, "sleep", {"seconds": 120})

            def running() -> str | None:
                listed = server.client.get(
                    "/jobs", params={"processID": "sleep", "status": "running", "f": "json"}
                ).json()["jobs"]
                return listed[0]["jobID"] if listed else None

            job_id = until(running, 30, "the sync job recorded as running")
            time.sleep(2)  # a couple of heartbeats reach Prefect's triggers
            for pid in with_environment("PYGEOAPI_CONFIG", str(server.config_path)):
                kill(pid)
        server.stop()
        # Another server reads it: the zombie automation has failed it.
        other = start_server(
            "gunicorn",
            tmp_path / "other",
            prefect_server.api_url,
            workers=1,
            processes=PROCESSES,
            manager={"heartbeat": FAST_HEARTBEAT},
        )
        try:
            document = until(
                lambda: (d := other.job(job_id).json())["status"] == "failed" and d,
                90,
                "the killed sync job failed by its missing heartbeats",
            )
            assert "heartbeat" in document["message"]
        finally:
            other.stop()
    finally:
        server.stop()
        from pygeoapi_prefect.config import HeartbeatConfig
        from pygeoapi_prefect.execution.heartbeat import ensure_zombie_automation
        from pygeoapi_prefect.prefect.api import PrefectAPI

        ensure_zombie_automation(
            PrefectAPI(prefect_server.api_url), HeartbeatConfig().zombie_timeout
        )
