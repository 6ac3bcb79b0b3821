"""The local pool's template is forked from the server process (execution/seed.py).

Real gunicorn, uvicorn and Django servers: a job process reports its own
pid and its template's parent (``SpanProcessor``), and the tests read the
processes from ``/proc``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from faults import children, kill, until
from servers import KINDS, Served, start_server
from test_slots import PROCESSES, QUIET, spans, submit

from pygeoapi_prefect.execution import seed as seeds


def _proc(pid: int, name: str) -> bytes:
    return (Path("/proc") / str(pid) / name).read_bytes()


def _parent(pid: int) -> int:
    return int(_proc(pid, "stat").rsplit(b")", 1)[1].split()[1])


def _listening_ports() -> set[int]:
    # The local ports of the IPv4 TCP sockets in LISTEN state (0A), whoever holds them.
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A":
            found.add(int(fields[1].rsplit(":", 1)[1], 16))
    return found


def _alive(pid: int) -> bool:
    try:
        return _proc(pid, "stat").rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


@contextlib.contextmanager
def one_job(
    kind: str, prefect_url: str, tmp_path: Path, seconds: float, **options: Any
) -> Iterator[tuple[Served, int, int]]:
    """A ``kind`` server running one span job: (the server, the job's pid, its worker's pid)."""
    folder = tmp_path / "spans"
    folder.mkdir()
    server = start_server(
        kind, tmp_path / "server", prefect_url, processes=PROCESSES, **{"manager": QUIET, **options}
    )
    job = None
    try:
        submit(server.base_url, folder, "job", seconds)
        until(lambda: spans(folder), 60, "the job started")
        [(_, _, job, worker)] = spans(folder).values()
        yield server, job, worker
    finally:
        if job is not None:
            kill(job)
        server.stop()


@pytest.mark.parametrize("kind", [*KINDS, "gunicorn --preload"])
def test_the_template_is_a_fork_of_the_server_process(kind, prefect_server, tmp_path):
    # --preload: the app is imported in gunicorn's master; each worker forks
    # its own seed right after its fork (the engine's fork hook).
    kind, *extra = kind.split()
    url = prefect_server.api_url
    with one_job(kind, url, tmp_path, 30, extra=tuple(extra)) as (server, job, worker):
        template = _parent(job)
        assert _proc(job, "comm").decode().strip() == seeds.JOB_NAME
        assert _proc(template, "comm").decode().strip() == seeds.NAME
        # Forked, not spawned: the command line is the server process's own
        # (a spawned template's is multiprocessing's spawn_main, with a pipe
        # of its own: not that of a uvicorn worker, spawned itself).
        assert _proc(template, "cmdline") == _proc(worker, "cmdline")
        assert _parent(template) == worker
        assert worker in children(server.process.pid)


def test_a_spawned_template_when_the_config_asks_for_one(prefect_server, tmp_path):
    manager = {"local": {"max_workers": 1, "template_start": "spawn"}, **QUIET}
    with one_job("gunicorn", prefect_server.api_url, tmp_path, 30, manager=manager) as (
        _,
        job,
        worker,
    ):
        template = _parent(job)
        assert _parent(template) == worker
        assert b"spawn_main" in _proc(template, "cmdline")
        assert _proc(template, "comm").decode().strip() == seeds.NAME


def test_a_job_that_outlives_its_server_leaves_the_port_free(prefect_server, tmp_path):
    # The template is a copy of a worker, listening socket included: it and
    # the jobs it forks must not keep the server's port bound after the
    # server has gone, or the server could not start again on it.
    with one_job("gunicorn", prefect_server.api_url, tmp_path, 120, workers=1) as (
        server,
        job,
        worker,
    ):
        port = int(server.base_url.rsplit(":", 1)[1])
        for pid in (server.process.pid, worker):
            kill(pid)
        until(lambda: not _alive(server.process.pid) and not _alive(worker), 10, "the server ended")
        assert _alive(job)  # its own session: the job outlives its server
        # Nothing listens there any more, within a moment: a killed process
        # shows as a zombie while its threads still end, its files open.
        # (Not a bind: the job's own connection to Prefect, opened now that
        # its server has gone, may have been given the freed port as its
        # ephemeral local port.)
        until(lambda: port not in _listening_ports(), 10, "the port let go")


NOTED = {
    "name": "pygeoapi_prefect.processes.FlowProcessor",
    "flow": "flow_that_notes_its_import:noted",
}


@pytest.mark.parametrize("kind", ["gunicorn", "gunicorn --preload", "uvicorn"])
def test_the_processors_are_imported_before_the_template_is_forked(kind, prefect_server, tmp_path):
    # pygeoapi imports every processor in the server to describe it. Imported
    # before the seed is forked (under --preload: in the master, before the
    # workers), a flow's module and Prefect are pages shared with the
    # template and its jobs: neither imports them again.
    from flow_that_notes_its_import import NOTES

    kind, *extra = kind.split()
    notes = tmp_path / "imports"
    server = start_server(
        kind,
        tmp_path / "server",
        prefect_server.api_url,
        processes={**PROCESSES, "noted": NOTED},
        manager=QUIET,
        extra=tuple(extra),
        env={NOTES: str(notes)},
    )
    try:
        jobs = [server.execute("noted", {"n": n}, asynchronous=True) for n in range(4)]
        for answer in jobs:
            assert answer.status_code == 201, answer.text
            job_id = answer.json()["jobID"]
            assert server.wait_for(job_id, "successful", "failed")["status"] == "successful"
        master = server.process.pid
        workers = [
            pid
            for pid in children(master)
            if _proc(pid, "comm").decode().strip() not in (seeds.NAME, seeds.JOB_NAME)
        ]
        importers = [int(pid) for pid in notes.read_text().split()]
    finally:
        server.stop()
    assert len(importers) == len(set(importers))  # each process once
    assert set(importers) <= {master, *workers}, (importers, master, workers)
    if extra:
        assert importers == [master]


@pytest.mark.parametrize("kind", ["gunicorn", "uvicorn"])
def test_a_server_without_flow_processes_never_imports_prefect(kind, prefect_server, tmp_path):
    # Prefect's API settings are read from the environment (no .env, TOML or
    # profile here), so neither the server nor its template and jobs import
    # Prefect (~40 MiB each) when no process is a Prefect flow. A sync job
    # runs in the server process, an async one in a job forked from its
    # template.
    server = start_server(
        kind,
        tmp_path,
        prefect_server.api_url,
        processes={"modules": "pygeoapi_test_processes.ModulesProcessor"},
        workers=1,
    )
    try:
        assert server.client.get("/processes").status_code == 200
        seen = []
        for asynchronous in (False, True, False):
            answer = server.execute("modules", {}, asynchronous=asynchronous)
            assert answer.status_code in (200, 201), answer.text
            if asynchronous:
                job_id = answer.json()["jobID"]
                assert server.wait_for(job_id, "successful", "failed")["status"] == "successful"
                answer = server.client.get(f"/jobs/{job_id}/results", params={"f": "json"})
            seen.append(answer.json()["value"])
    finally:
        server.stop()
    assert [result["prefect"] for result in seen] == [False, False, False], seen
    assert seen[0]["pid"] == seen[2]["pid"] != seen[1]["pid"]  # the server, then a job
