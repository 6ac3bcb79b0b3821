"""One job pool per server: ``local.max_workers`` counts the jobs of all its worker processes.

Real gunicorn servers with several workers; the jobs note their own start
and end (``SpanProcessor``), and the tests count how many overlapped from
those notes: a count, not a timing. The slots are files locked with
``flock`` (execution/slots.py), so a SIGKILLed worker and its job processes
leave no slot behind.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import math
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from faults import booted_workers, kill, until
from servers import start_server

from pygeoapi_prefect.config import ManagerConfig
from pygeoapi_prefect.execution.slots import SlotFiles, shared_gate

PROCESSES: dict[str, str | dict[str, Any]] = {"span": "pygeoapi_test_processes.SpanProcessor"}
QUIET = {"heartbeat": {"install_automation": False}}


def spans(folder: Path) -> dict[str, tuple[float, float, int, int]]:
    """Each job's (start, end, pid, worker pid); end is infinite while it runs."""
    found = {}
    for path in folder.iterdir():
        if path.name.startswith("."):
            continue  # a note being written aside (SpanProcessor)
        start, end, pid, worker = path.read_text().split()
        found[path.name] = (
            float(start),
            math.inf if end == "-" else float(end),
            int(pid),
            int(worker),
        )
    return found


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The largest number of the intervals that overlap (an end before a start at one time)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    now = most = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def submit(base_url: str, folder: Path, name: str, seconds: float) -> str:
    # A connection of its own, so that the submissions spread over the workers.
    answer = httpx.post(
        f"{base_url}/processes/span/execution",
        json={"inputs": {"spans": str(folder), "name": name, "seconds": seconds}},
        headers={"Prefer": "respond-async"},
        timeout=60,
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["jobID"])


def all_successful(server, jobs: list[str]) -> None:
    for job_id in jobs:
        assert server.wait_for(job_id, "successful", "failed", timeout=120)["status"] == (
            "successful"
        )


def test_four_workers_run_at_most_max_workers_jobs_at_once(prefect_server, tmp_path):
    folder = tmp_path / "spans"
    folder.mkdir()
    limit, count = 3, 12
    server = start_server(
        "gunicorn",
        tmp_path / "server",
        prefect_server.api_url,
        workers=4,
        processes=PROCESSES,
        manager={"local": {"max_workers": limit}, **QUIET},
        # A sync worker takes one connection at a time, so concurrent
        # submissions spread over the workers (a gthread worker may take all).
        extra=("--worker-class", "sync"),
    )
    try:
        # Every worker can take submissions before the burst (the first to
        # boot answers the readiness check; on a loaded machine the others
        # may still be importing the app for the whole burst).
        until(lambda: len(booted_workers(server.process.pid)) == 4, 60, "the 4 workers booted")
        with concurrent.futures.ThreadPoolExecutor(count) as pool:
            jobs = list(
                pool.map(lambda i: submit(server.base_url, folder, f"job-{i}", 1.0), range(count))
            )
        all_successful(server, jobs)
    finally:
        server.stop()
    ran = spans(folder)
    assert sorted(ran) == sorted(f"job-{i}" for i in range(count))  # each once, each ended
    # Several workers accepted and ran jobs (else one pool's own limit would do).
    assert len({worker for *_, worker in ran.values()}) >= 2
    assert most_at_once([(start, end) for start, end, *_ in ran.values()]) <= limit


def test_a_killed_worker_and_its_jobs_leak_no_slot(prefect_server, tmp_path):
    folder = tmp_path / "spans"
    folder.mkdir()
    slot_dir = tmp_path / "slots"
    limit = 2
    server = start_server(
        "gunicorn",
        tmp_path / "server",
        prefect_server.api_url,
        workers=2,
        processes=PROCESSES,
        manager={"local": {"max_workers": limit, "pool_dir": str(slot_dir)}, **QUIET},
    )
    try:
        for index in range(limit):
            submit(server.base_url, folder, f"held-{index}", 120)
        until(lambda: len(spans(folder)) == limit, 90, "the long jobs started")
        slots = SlotFiles(slot_dir, "job", limit)
        assert slots.held() == limit
        # SIGKILL: the workers that run them, and the jobs' process groups.
        for _, _, pid, worker in spans(folder).values():
            kill(worker)
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        until(lambda: slots.held() == 0, 30, "the killed jobs' slots were let go")
        names = [f"next-{index}" for index in range(2 * limit)]
        jobs = [submit(server.base_url, folder, name, 0.5) for name in names]
        all_successful(server, jobs)
    finally:
        server.stop()
    ran = spans(folder)
    after = [(start, end) for name, (start, end, *_) in ran.items() if name in names]
    assert len(after) == len(names) and all(end < math.inf for _, end in after)
    assert most_at_once(after) <= limit


def test_a_pool_dir_needs_the_server_scope(tmp_path):
    with pytest.raises(ValueError, match="`pool_dir` .* needs `pool_scope: server`"):
        ManagerConfig.model_validate(
            {"local": {"pool_scope": "process", "pool_dir": str(tmp_path)}}
        )


HOLD = """
import sys, time
from collections.abc import Iterator
from pathlib import Path
from pygeoapi_prefect.execution.slots import SlotFiles, shared_gate
release = shared_gate(SlotFiles(Path(sys.argv[1]), "prefect-write", 1))(30, False)
print("held" if release else "none", flush=True)
time.sleep(600)
"""

WAIT_URGENT = """
import fcntl, os, sys, time
from collections.abc import Iterator
from pathlib import Path
from pygeoapi_prefect.execution.slots import SlotFiles, shared_gate
files = SlotFiles(Path(sys.argv[1]), "prefect-write", 1)
shared_gate(files)
# What a waiting create holds while it waits (slots.shared_gate): a shared lock.
fd = os.open(files.directory / "prefect-write-0-urgent", os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_SH)
print("waiting", flush=True)
time.sleep(600)
"""


@contextlib.contextmanager
def other_process(script: str, folder: Path) -> Iterator[subprocess.Popen[str]]:
    """``script`` in a Python process of its own (its stdout a pipe), killed at the end."""
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(folder)], stdout=subprocess.PIPE, text=True
    )
    try:
        yield process
    finally:
        process.kill()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


def test_the_servers_prefect_writes_take_turns_and_a_killed_holder_frees_its_turn(tmp_path):
    # The write gate that the worker processes of one server share: one turn,
    # held by another process, is not ours until that process is SIGKILLed.
    acquire = shared_gate(SlotFiles(tmp_path, "prefect-write", 1))
    with other_process(HOLD, tmp_path) as holder:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        assert acquire(0.05, True) is None
        holder.kill()
        holder.wait(10)
        release = acquire(5, False)
        assert release is not None
        assert acquire(0, True) is None  # one turn: ours now, until released
        release()
        second = acquire(0, False)
        assert second is not None
        second()


def test_writes_let_a_waiting_create_of_another_process_go_first(tmp_path):
    files = SlotFiles(tmp_path, "prefect-write", 1)
    acquire = shared_gate(files)
    with other_process(WAIT_URGENT, tmp_path) as holder:
        assert holder.stdout is not None
        # The turn is free, but the other process has a create waiting for it.
        assert holder.stdout.readline().strip() == "waiting"
        assert files.held() == 0
        assert acquire(0.05, False) is None  # a state write lets it go first
        create = acquire(0, True)  # a create of ours goes (with the other one)
        assert create is not None
        create()
        holder.kill()
        holder.wait(10)
        release = acquire(5, False)  # its locks went with it
        assert release is not None
        release()
