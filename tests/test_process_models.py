"""The engine under the servers' own process models: gunicorn --preload, and Django.

``--preload`` imports the app in gunicorn's master before it forks the
workers; pygeoapi's Django views build a manager on every request. Either
way each serving process must have exactly one engine (one local pool),
built in that process.
"""

from __future__ import annotations

from pathlib import Path

from faults import children, workers
from servers import start_server

MANAGER = {"local": {"max_workers": 1}, "heartbeat": {"install_automation": False}}


def _pools(master: int) -> dict[int, list[int]]:
    # Each server worker process and the local-pool processes it spawned.
    return {pid: workers(pid) for pid in children(master)}


def _lease_pids(prefect_api) -> set[int]:
    # Every started engine holds a lease naming its process.
    leases = prefect_api.request(
        "POST",
        "/variables/filter",
        json={"variables": {"name": {"like_": "pygeoapi_lease_%"}}, "limit": 200},
    ).json()
    return {int(lease["value"]["pid"]) for lease in leases}


def test_gunicorn_preload_runs_jobs_in_each_worker_not_the_master(
    prefect_server, prefect_api, tmp_path
):
    server = start_server(
        "gunicorn", tmp_path, prefect_server.api_url, manager=MANAGER, extra=("--preload",)
    )
    try:
        job_ids = [
            server.execute("hello-world", {"name": f"p{i}"}, asynchronous=True).json()["jobID"]
            for i in range(6)
        ]
        for job_id in job_ids:
            assert server.wait_for(job_id, "successful", "failed")["status"] == "successful"
        assert server.execute("hello-world", {"name": "sync"}).status_code == 200
        pools = _pools(server.process.pid)
        # The master started no engine and runs no pool; every worker has its own.
        assert not set(workers(server.process.pid)) & set(children(server.process.pid))
        leased = _lease_pids(prefect_api)
        assert server.process.pid not in leased
        assert set(pools) <= leased, (pools, leased)
        assert all(len(pool) <= 1 for pool in pools.values()), pools
        log = server.log_path.read_text(errors="replace")
        assert "fork() may lead to deadlocks" not in log
        assert "Traceback" not in log
    finally:
        server.stop()


def test_django_builds_one_engine_per_process_whatever_the_requests(prefect_server, tmp_path):
    server = start_server("django", tmp_path, prefect_server.api_url, manager=MANAGER)
    try:
        job_ids = []
        for i in range(3):
            job_ids.append(
                server.execute("hello-world", {"name": f"d{i}"}, asynchronous=True).json()["jobID"]
            )
            assert server.execute("hello-world", {"name": f"s{i}"}).status_code == 200
        for job_id in job_ids:
            assert server.wait_for(job_id, "successful", "failed")["status"] == "successful"
        pools = _pools(server.process.pid)
        assert pools and all(len(pool) <= 1 for pool in pools.values()), pools
        total = sum(len(pool) for pool in pools.values())
        assert total <= 2  # two Django worker processes, one pool process each at most
        for pid in pools:
            threads = len(list((Path("/proc") / str(pid) / "task").iterdir()))
            # gunicorn's main and 4 request threads, the engine's few: not a set per request.
            assert threads <= 16, (pid, threads)
    finally:
        server.stop()
