"""The local pool's template is forked from the server process (execution/seed.py).

Real gunicorn, uvicorn and Django servers: a job process reports its own
pid and its template's parent (``SpanProcessor``), and the tests read the
processes from ``/proc``.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from faults import children, kill, until
from servers import KINDS, start_server
from test_slots import PROCESSES, QUIET, spans, submit

from pygeoapi_prefect.execution import seed as seeds


def _proc(pid: int, name: str) -> bytes:
    return (Path("/proc") / str(pid) / name).read_bytes()


def _parent(pid: int) -> int:
    return int(_proc(pid, "stat").rsplit(b")", 1)[1].split()[1])


def _alive(pid: int) -> bool:
    try:
        return _proc(pid, "stat").rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


@pytest.mark.parametrize("kind", KINDS)
def test_the_template_is_a_fork_of_the_server_process(kind, prefect_server, tmp_path):
    folder = tmp_path / "spans"
    folder.mkdir()
    server = start_server(
        kind, tmp_path / "server", prefect_server.api_url, processes=PROCESSES, manager=QUIET
    )
    try:
        submit(server.base_url, folder, "job", 30)
        until(lambda: spans(folder), 60, "the job started")
        [(_, _, job, worker)] = spans(folder).values()
        template = _parent(job)
        assert _proc(job, "comm").decode().strip() == seeds.JOB_NAME
        assert _proc(template, "comm").decode().strip() == seeds.NAME
        # Forked, not spawned: the command line is the server process's own
        # (a spawned template's is multiprocessing's spawn_main, with a pipe
        # of its own: not that of a uvicorn worker, spawned itself).
        assert _proc(template, "cmdline") == _proc(worker, "cmdline")
        assert _parent(template) == worker
        assert worker in children(server.process.pid)
    finally:
        server.stop()


def test_a_spawned_template_when_the_config_asks_for_one(prefect_server, tmp_path):
    folder = tmp_path / "spans"
    folder.mkdir()
    server = start_server(
        "gunicorn",
        tmp_path / "server",
        prefect_server.api_url,
        processes=PROCESSES,
        manager={"local": {"max_workers": 1, "template_start": "spawn"}, **QUIET},
    )
    try:
        job_id = submit(server.base_url, folder, "job", 0)
        assert server.wait_for(job_id, "successful", "failed", timeout=60)["status"] == (
            "successful"
        )
        [(_, _, _, worker)] = spans(folder).values()
        [template] = [pid for pid in children(worker) if b"spawn_main" in _proc(pid, "cmdline")]
        assert _proc(template, "comm").decode().strip() == seeds.NAME
    finally:
        server.stop()


def test_a_job_that_outlives_its_server_leaves_the_port_free(prefect_server, tmp_path):
    # The template is a copy of a worker, listening socket included: it and
    # the jobs it forks must not keep the server's port bound after the
    # server has gone, or the server could not start again on it.
    folder = tmp_path / "spans"
    folder.mkdir()
    server = start_server(
        "gunicorn",
        tmp_path / "server",
        prefect_server.api_url,
        workers=1,
        processes=PROCESSES,
        manager=QUIET,
    )
    job = None
    try:
        submit(server.base_url, folder, "long", 120)
        until(lambda: spans(folder), 60, "the long job started")
        [(_, _, job, worker)] = spans(folder).values()
        port = int(server.base_url.rsplit(":", 1)[1])
        kill(server.process.pid)
        kill(worker)
        until(lambda: not _alive(worker), 10, "the worker ended")
        assert _alive(job)  # its own session: the job outlives its server
        with socket.socket() as again:
            again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            again.bind(("127.0.0.1", port))
            again.listen()
    finally:
        if job is not None:
            kill(job)
        server.stop()
