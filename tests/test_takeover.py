"""Liveness decides recovery: a killed server's queued jobs run elsewhere, once each.

The first gunicorn is killed outright (SIGKILL to every process of it) with
jobs queued behind a running one; a second gunicorn with another config
path, so another instance identity (the case the earlier identity-based
recovery could not serve), takes them over once their holder's lease has
expired: ``recovery.lease_seconds + recovery.scan_seconds``.
"""

from __future__ import annotations

import collections
import time
from typing import Any

from faults import kill, until, with_environment
from servers import start_server

PROCESSES: dict[str, str | dict[str, Any]] = {
    "run-log": "pygeoapi_test_processes.RunLogProcessor",
    "sleep": "pygeoapi_test_processes.SleepProcessor",
}
LEASE, SCAN = 4, 1
MANAGER = {
    "local": {"max_workers": 1},
    "recovery": {"lease_seconds": LEASE, "scan_seconds": SCAN},
    "heartbeat": {"install_automation": False},
}


def test_queued_jobs_of_a_killed_server_are_taken_over_once(prefect_server, tmp_path):
    log = tmp_path / "runs.log"
    log.touch()
    first = start_server(
        "gunicorn",
        tmp_path / "a",
        prefect_server.api_url,
        workers=1,
        processes=PROCESSES,
        manager=MANAGER,
    )
    try:
        blocker = first.execute("sleep", {"seconds": 120}, asynchronous=True).json()["jobID"]
        first.wait_for(blocker, "running")
        queued = [
            first.execute("run-log", {"log": str(log)}, asynchronous=True).json()["jobID"]
            for _ in range(3)
        ]
        assert all(first.job(j).json()["status"] == "accepted" for j in queued)
    finally:
        # Killed, not stopped: no lease is released, nothing is handed over.
        for pid in with_environment("PYGEOAPI_CONFIG", str(first.config_path)):
            kill(pid)
        first.stop()
    killed_at = time.monotonic()

    second = start_server(
        "gunicorn",
        tmp_path / "b",
        prefect_server.api_url,
        workers=2,
        processes=PROCESSES,
        manager=MANAGER,
    )
    try:
        until(
            lambda: all(second.job(j).json()["status"] == "successful" for j in queued),
            60,
            "the killed server's queued jobs ran on the other one",
        )
        took = time.monotonic() - killed_at
        runs = collections.Counter(line.split()[0] for line in log.read_text().splitlines())
        assert runs == {job_id: 1 for job_id in queued}
        # The blocker's process died with its server: it is not run again.
        assert second.job(blocker).json()["status"] == "running"
    finally:
        second.stop()
    print(f"taken over {took:.1f} s after the kill (lease {LEASE} s + scan {SCAN} s)")
