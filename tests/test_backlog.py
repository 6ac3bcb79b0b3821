"""The Prefect writes a server makes off the request path wait in a bounded backlog.

Run names, summary artifacts and sync jobs' log lines are written after a
job's answer, on the engine's background threads, which share Prefect's write
slots with the jobs' own writes. Under sustained sync load they fell behind
and their queue grew with every job (the server's memory with it: issue 15).
``server.manager.background_backlog`` bounds it. These tests fill the backlog
of a real server deterministically (``BusyBackgroundProcessor`` takes every
background thread until released), count what waits and what was refused
through ``/metrics``, and read the runs back from the real Prefect server.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Pygeoapi, start_pygeoapi
from test_metrics import eventually, scrape, total

from pygeoapi_prefect.execution.run_page import run_name
from pygeoapi_prefect.metrics import PREFIX
from pygeoapi_prefect.prefect.api import PrefectAPI
from pygeoapi_prefect.prefect.server import PrefectServer

LIMIT = 5
JOBS = 12
PROCESSES: dict[str, str | dict[str, Any]] = {
    "hello-world": "HelloWorld",
    "chatty": "pygeoapi_test_processes.ChattyProcessor",
    "busy-background": "pygeoapi_test_processes.BusyBackgroundProcessor",
}


@pytest.fixture(scope="module")
def server(
    prefect_server: PrefectServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pygeoapi]:
    started = start_pygeoapi(
        tmp_path_factory.mktemp("backlog"),
        prefect_server.api_url,
        processes=PROCESSES,
        manager={"background_backlog": LIMIT},
    )
    try:
        yield started
    finally:
        started.stop()


def _job_id(response: Any) -> str:
    assert response.status_code == 200, response.text
    return str(response.headers["Location"].rstrip("/").split("/")[-1])


def _backlog(server: Pygeoapi) -> tuple[float, float]:
    samples, _ = scrape(server.base_url)
    return (
        total(samples, PREFIX + "background_pending"),
        total(samples, PREFIX + "background_skipped_total"),
    )


def test_backlog_never_holds_more_than_its_bound(
    server: Pygeoapi, prefect_api: PrefectAPI, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    try:
        # Every background thread busy: what the server queues from now on waits.
        _job_id(server.execute("busy-background", {"release": str(release)}))
        ids = [_job_id(server.execute("hello-world", {"name": "backlog"})) for _ in range(JOBS)]
        # Two writes a job (its run's name, its summary), the busy job's first:
        # LIMIT of them wait, the rest were refused (none queued beyond the bound).
        assert _backlog(server) == (LIMIT, 2 + 2 * JOBS - LIMIT)

        # A sync job's log lines do not wait behind a full backlog: its request
        # sent them, so they are there as soon as it answers.
        marker = f"backlog-{uuid.uuid4().hex[:8]}"
        chatty = _job_id(server.execute("chatty", {"marker": marker, "lines": 1}))
        logs = server.client.get(f"/jobs/{chatty}/logs", params={"limit": 100}).json()
        assert f"{marker} warning" in [line["message"] for line in logs["logs"]]
        # Its name, its summary and its log lines were each refused a place.
        assert _backlog(server) == (LIMIT, 2 + 2 * JOBS - LIMIT + 3)
    finally:
        release.touch()
    eventually(lambda: _backlog(server)[0] == 0)

    # What waited ran once the threads were free; what was refused never did.
    # Queued in order: the busy job's name and summary, the first job's name
    # and summary, the second job's name.
    def name(job_id: str) -> str:
        run = prefect_api.read_flow_run(job_id)
        assert run is not None
        return str(run["name"])

    assert [name(job_id) == run_name("hello-world", job_id) for job_id in ids] == (
        [True, True] + [False] * (JOBS - 2)
    )
    # The jobs themselves are whole: recorded, successful, their results there.
    for job_id in (ids[0], ids[-1]):
        status = server.job(job_id).json()
        assert status["status"] == "successful"
        assert server.client.get(f"/jobs/{job_id}/results").status_code == 200


def test_backlog_empties_and_takes_work_again(server: Pygeoapi, prefect_api: PrefectAPI) -> None:
    eventually(lambda: _backlog(server)[0] == 0)
    _, skipped = _backlog(server)
    job_id = _job_id(server.execute("hello-world", {"name": "after"}))
    eventually(lambda: _backlog(server)[0] == 0)
    run = prefect_api.read_flow_run(job_id)
    assert run is not None and run["name"] == run_name("hello-world", job_id)
    assert _backlog(server)[1] == skipped  # nothing refused with room to spare
