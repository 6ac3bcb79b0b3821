"""A real OGC API - Processes client: OWSLib drives describe, execute, status, results, dismiss.

OWSLib 0.36's ``owslib.ogcapi.processes.Processes`` has methods for the
processes and for execution; for jobs it is used through its own request
helper (``_request``), as its users do. Its GETs send ``Accept: */*``, which
pygeoapi answered with an HTML page for ``/jobs/{id}/results``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from ogc import validate
from owslib.ogcapi.processes import Processes
from servers import start_server

PROCESSES: dict[str, str | dict[str, Any]] = {
    "hello-world": "HelloWorld",
    "bytes": "pygeoapi_test_processes.BytesProcessor",
    "sleep": "pygeoapi_test_processes.SleepProcessor",
}


@pytest.fixture(scope="module", params=["serve", "uvicorn"])
def base_url(request, prefect_server, tmp_path_factory) -> Iterator[str]:
    if request.param == "serve":
        yield request.getfixturevalue("pygeoapi").base_url
        return
    server = start_server("uvicorn", tmp_path_factory.mktemp("owslib"), prefect_server.api_url)
    try:
        yield server.base_url
    finally:
        server.stop()


@pytest.fixture
def client(base_url: str) -> Processes:
    # OWSLib keeps Prefer in a module-level dict shared by every client.
    processes = Processes(base_url)
    processes.headers.pop("Prefer", None)
    return processes


def _job_id(client: Processes) -> str:
    return str(client.response_headers["Location"].rsplit("/", 1)[1])


def test_describe(client: Processes) -> None:
    ids = {process["id"] for process in client.processes()}
    # The first page (OWSLib asks for no limit): the config's first processes.
    assert {"hello-world", "echo"} <= ids
    assert client.process("sleep")["id"] == "sleep"
    description = client.process("hello-world")
    validate(description, "process")
    assert "name" in description["inputs"]


def test_sync_execute_status_and_results(client: Processes) -> None:
    results = client.execute("hello-world", {"name": "OWSLib"})
    validate(results, "results")
    assert results == {"echo": "Hello OWSLib!"}
    job_id = _job_id(client)
    status = client._request(path=f"jobs/{job_id}")
    validate(status, "statusInfo")
    assert status["status"] == "successful"
    # Accept: */* (requests' default): the results document, not an HTML page.
    assert client._request(path=f"jobs/{job_id}/results") == results


def test_async_execute_status_results_and_raw(client: Processes, base_url: str) -> None:
    accepted = client.execute("bytes", {}, response="raw", async_=True)
    validate(accepted, "statusInfo")
    job_id = accepted["jobID"]
    assert client.response_headers["Location"] == f"{base_url}/jobs/{job_id}"
    status = accepted
    for _ in range(600):
        status = client._request(path=f"jobs/{job_id}")
        if status["status"] in ("successful", "failed"):
            break
        time.sleep(0.05)
    assert status["status"] == "successful", status
    raw = client._request(path=f"jobs/{job_id}/results", as_dict=False)
    assert raw == b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    assert client.response_headers["Content-Type"] == "image/png"


def test_dismiss(client: Processes) -> None:
    accepted = client.execute("sleep", {"seconds": 30}, async_=True)
    job_id = accepted["jobID"]
    dismissed = client._request(method="DELETE", path=f"jobs/{job_id}")
    validate(dismissed, "statusInfo")
    assert dismissed["status"] == "dismissed"
    with pytest.raises(RuntimeError, match="no-such-job"):
        client._request(path=f"jobs/{job_id}")
