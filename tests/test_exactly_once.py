"""Every job runs exactly once under gunicorn, through worker recycling and a restart.

The operator's set-up of the production-runtime issue: gunicorn with three
workers recycled every few dozen requests (``--max-requests``), and the
whole server restarted (SIGTERM, then started again) in the middle of 300
async submissions of a process that appends its job id to a file. Every job
ends ``successful`` and no id is written twice.
"""

from __future__ import annotations

import collections
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from faults import until
from servers import start_server

PROCESSES: dict[str, str | dict[str, Any]] = {
    "run-log": "pygeoapi_test_processes.RunLogProcessor",
}
#: Quick hand-over between processes, so the test is short.
MANAGER = {
    "local": {"max_workers": 1, "shutdown_grace": 3},  # below gunicorn's graceful 5 s
    "recovery": {"lease_seconds": 6, "scan_seconds": 1},
    # The zombie automation is shared by the whole Prefect server: left as it is.
    "heartbeat": {"install_automation": False},
    "api_write_concurrency": 2,
}
JOBS = 300


def _submit(base_url: str, log: Path, index: int) -> str:
    # Resent until accepted: during the restart nobody listens for a moment.
    body = {"inputs": {"log": str(log), "seconds": 0.05 * (index % 3)}}
    deadline = time.monotonic() + 120
    while True:
        try:
            response = httpx.post(
                f"{base_url}/processes/run-log/execution",
                json=body,
                headers={"Prefer": "respond-async"},
                timeout=30,
            )
            if response.status_code == 201:
                return str(response.json()["jobID"])
            assert response.status_code == 503, response.text  # busy or stopping: resend
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"submission {index} never accepted"
        time.sleep(0.2)


def _count(base_url: str, *statuses: str) -> int | None:
    # One request, whatever the number of jobs: numberMatched of a filtered list.
    params = [("processID", "run-log"), ("limit", "1"), ("f", "json")]
    params += [("status", status) for status in statuses]
    try:
        response = httpx.get(f"{base_url}/jobs", params=params, timeout=30)
    except httpx.TransportError:
        return None
    return int(response.json()["numberMatched"]) if response.status_code == 200 else None


@pytest.mark.timeout(900)
def test_300_jobs_each_run_once_through_recycling_and_a_restart(prefect_server, tmp_path):
    log = tmp_path / "runs.log"
    log.touch()
    # gunicorn's default graceful timeout (the launcher's 5 s is for quick tests):
    # a stopping worker drains its running jobs (local.shutdown_grace) within it.
    recycle = ("--max-requests", "30", "--max-requests-jitter", "10", "--graceful-timeout", "30")
    server = start_server(
        "gunicorn",
        tmp_path,
        prefect_server.api_url,
        workers=3,
        extra=recycle,
        processes=PROCESSES,
        manager=MANAGER,
    )
    port = int(server.base_url.rsplit(":", 1)[1])
    job_ids: list[str] = []
    try:
        with ThreadPoolExecutor(6) as pool:
            first = list(pool.map(lambda i: _submit(server.base_url, log, i), range(JOBS // 2)))
            job_ids += first
            # A full restart while the first half still runs or waits.
            server.process.send_signal(signal.SIGTERM)
            server.process.wait(60)
            server = start_server(
                "gunicorn",
                tmp_path,
                prefect_server.api_url,
                port=port,
                workers=3,
                extra=recycle,
                processes=PROCESSES,
                manager=MANAGER,
            )
            job_ids += list(
                pool.map(lambda i: _submit(server.base_url, log, i), range(JOBS // 2, JOBS))
            )

        until(
            lambda: _count(server.base_url, "accepted", "running") == 0,
            600,
            "all 300 jobs finished",
            every=2,
        )
        successful = _count(server.base_url, "successful")
        failed = _count(server.base_url, "failed", "dismissed")
        why = server.client.get(
            "/jobs", params={"processID": "run-log", "status": "failed", "f": "json"}
        ).json()["jobs"]
    finally:
        server.stop()
    assert len(set(job_ids)) == JOBS
    assert (successful, failed) == (JOBS, 0), [job.get("message") for job in why]
    lines = [line.split() for line in log.read_text().splitlines()]
    runs = collections.Counter(job_id for job_id, _ in lines)
    twice = {
        job_id: [pid for j, pid in lines if j == job_id] for job_id in runs if runs[job_id] > 1
    }
    assert not twice, f"{len(twice)} jobs ran more than once (job: pids): {twice}"
    assert set(runs) == set(job_ids)
    # Different gunicorn workers (and their successors) ran the jobs.
    pids = {pid for _, pid in lines}
    assert len(pids) >= 3
