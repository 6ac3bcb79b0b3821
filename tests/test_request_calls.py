"""The Prefect calls a request makes: each job run read once a request, dismiss's writes.

One real pygeoapi server (one worker, metrics on) on the session's Prefect
server; the calls are counted by the server's own Prometheus histogram of
Prefect calls (``prefect_api_request_seconds``, by method and route), scraped
over HTTP before and after a request, once every job has settled (nothing
else then reads a run).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import Pygeoapi, start_pygeoapi
from ogc import validate
from test_metrics import scrape, total

from pygeoapi_prefect.metrics import PREFIX

TIMED = PREFIX + "prefect_api_request_seconds_count"


@pytest.fixture(scope="module")
def server(prefect_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pygeoapi]:
    started = start_pygeoapi(tmp_path_factory.mktemp("request-calls"), prefect_server.api_url)
    try:
        yield started
    finally:
        started.stop()


def run_reads(server: Pygeoapi) -> float:
    samples, _ = scrape(server.base_url)
    return total(samples, TIMED, method="GET", route="/flow_runs/{id}")


def reads_of(server: Pygeoapi, path: str, **params: str) -> tuple[int, Any]:
    """(runs read by Prefect, the answer) of one GET of ``path``."""
    before = run_reads(server)
    response = server.client.get(path, params=params)
    return int(run_reads(server) - before), response


def test_results_read_the_job_run_once(server: Pygeoapi) -> None:
    job_id = server.execute("hello-world", {"name": "once"}).headers["Location"].rsplit("/", 1)[1]
    reads, response = reads_of(server, f"/jobs/{job_id}/results", f="json")
    assert response.status_code == 200, response.text
    assert response.json() == {"id": "echo", "value": "Hello once!"}
    # pygeoapi looks the job up first, and our results answer needs the run too.
    assert reads == 1

    reads, response = reads_of(server, f"/jobs/{job_id}", f="json")
    assert response.status_code == 200
    validate(response.json(), "statusInfo")
    assert reads == 1


def test_results_of_a_failed_job_read_it_once(server: Pygeoapi) -> None:
    job_id = server.execute("chatty", {"fail": "400", "lines": 0}, asynchronous=True).json()[
        "jobID"
    ]
    server.wait_for(job_id, "failed")
    reads, response = reads_of(server, f"/jobs/{job_id}/results", f="json")
    assert response.status_code == 400, response.text
    document = response.json()
    validate(document, "exception")
    assert reads == 1


def test_a_dismissed_job_is_gone_for_the_next_request(server: Pygeoapi, prefect_api: Any) -> None:
    job_id = server.execute("sleep", {"seconds": 60}, asynchronous=True).json()["jobID"]
    server.wait_for(job_id, "running")
    assert server.client.delete(f"/jobs/{job_id}").status_code == 200
    assert server.job(job_id).status_code == 404
    assert server.client.delete(f"/jobs/{job_id}").status_code == 404
    deadline = time.monotonic() + 10
    while prefect_api.read_flow_run(job_id)["state_type"] != "CANCELLED":
        assert time.monotonic() < deadline, prefect_api.read_flow_run(job_id)["state_type"]
        time.sleep(0.05)
