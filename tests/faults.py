"""Helpers of the fault tests: processes on this machine, restarts, bounded waits."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import Pygeoapi, server_env, spawn_serve, wait_serving

from pygeoapi_prefect.execution import seed as seeds

#: Short heartbeat settings, so that the tests see a dead job within seconds.
FAST_HEARTBEAT = {"interval": 1, "zombie_timeout": 10}
FINISHED = ("successful", "failed", "dismissed")


def workers(pid: int) -> list[int]:
    """The local pool's job processes under the pygeoapi process ``pid``.

    Each server process (a gunicorn worker of ``pygeoapi-prefect serve``)
    has one template process, forked from it or spawned, which forks a
    process per running job; each is named by its command name
    (``execution/seed.py``: ``pygeoapi-job``).
    """

    def named(process: int) -> bool:
        try:
            return (Path("/proc") / str(process) / "comm").read_text().strip() == seeds.JOB_NAME
        except OSError:
            return False

    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        if named(current):
            found.append(current)
        todo.extend(children(current))
    return found


def booted_workers(master: int) -> list[int]:
    """The worker processes of the server ``master`` that have imported the app.

    A worker forks its pool's template as it imports the app (``seed.py``),
    so a booted worker is one with a child of that name.
    """

    def named(process: int) -> bool:
        try:
            return (Path("/proc") / str(process) / "comm").read_text().strip() == seeds.NAME
        except OSError:
            return False

    return [worker for worker in children(master) if any(map(named, children(worker)))]


def children(pid: int) -> list[int]:
    """The ids of the live processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the command name (which may hold spaces) in parentheses.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def with_environment(name: str, value: str) -> list[int]:
    """The ids of the processes whose environment holds ``name=value``."""
    wanted = f"{name}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if wanted in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def kill(pid: int, sig: signal.Signals = signal.SIGKILL) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def until(condition: Callable[[], Any], timeout: float, what: str, every: float = 0.2) -> Any:
    """Poll ``condition`` until it returns something true; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(every)


def restart(server: Pygeoapi, prefect_api_url: str, *, timeout: float = 60) -> Pygeoapi:
    """Start ``pygeoapi-prefect serve`` again on the same config and port."""
    port = int(server.base_url.rsplit(":", 1)[1])
    tmp = server.config_path.parent
    log_path = tmp / f"pygeoapi-{time.monotonic_ns()}.log"
    env = server_env(prefect_api_url, tmp / "prefect-home")
    process = spawn_serve(server.config_path, port, tmp, env, log_path)
    again = Pygeoapi(server.base_url, server.config_path, server.results_dir, process, log_path)
    wait_serving(process, again.base_url, log_path, timeout)
    return again


def status_of(server: Pygeoapi, job_id: str) -> dict[str, Any]:
    document: dict[str, Any] = server.job(job_id).json()
    return document
