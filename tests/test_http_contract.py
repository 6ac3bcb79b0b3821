"""The same HTTP contract on every production server (tests/servers.py).

gunicorn with the Flask app, uvicorn with the Starlette app, and pygeoapi's
Django project with our middleware each answer the same checks: execution,
status, the job list with its filters and ``numberMatched``, results as
asked, dismiss, OGC exception documents (validated against the OGC schemas)
for unknown ids and bad bodies, the body limit, and links.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from ogc import validate
from servers import KINDS, Served, start_server

MAX_BYTES = 64 * 1024
PROCESSES: dict[str, str | dict[str, Any]] = {
    "hello-world": "HelloWorld",
    "bytes": "pygeoapi_test_processes.BytesProcessor",
    "sleep": "pygeoapi_test_processes.SleepProcessor",
    "fail": "pygeoapi_test_processes.FailProcessor",
}
EXCEPTIONS = "http://www.opengis.net/def/exceptions/ogcapi-processes-1/1.0/"
RESULTS_REL = "http://www.opengis.net/def/rel/ogc/1.0/results"


@pytest.fixture(scope="module", params=KINDS)
def served(request, prefect_server, tmp_path_factory) -> Iterator[Served]:
    server = start_server(
        request.param,
        tmp_path_factory.mktemp(f"contract-{request.param}"),
        prefect_server.api_url,
        processes=PROCESSES,
        manager={"limits": {"max_request_bytes": MAX_BYTES}},
    )
    try:
        yield server
    finally:
        server.stop()


def _ogc_exception(response: Any, status: int, *, type_: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"].startswith("application/json"), response.headers
    document = response.json()
    validate(document, "exception")
    if type_ is not None:
        assert document["type"] == type_, document
    return dict(document)


def _links(response: Any) -> list[str]:
    return [value.strip() for value in ",".join(response.headers.get_list("link")).split(",")]


def _job_id(response: Any) -> str:
    return str(response.headers["location"].rsplit("/", 1)[1])


def test_sync_execution_links_its_job(served: Served) -> None:
    response = served.execute("hello-world", {"name": "sync"})
    assert response.status_code == 200, response.text
    assert response.json() == {"id": "echo", "value": "Hello sync!"}
    location = response.headers["location"]
    assert location == f"{served.base_url}/jobs/{_job_id(response)}"
    links = _links(response)
    assert any(f"<{location}>" in link and 'rel="monitor"' in link for link in links), links
    assert any(f"<{location}/results>" in link and RESULTS_REL in link for link in links), links
    status = served.client.get(location, params={"f": "json"}).json()
    validate(status, "statusInfo")
    assert status["status"] == "successful"


def test_async_execution_status_and_links(served: Served) -> None:
    response = served.execute("hello-world", {"name": "async"}, asynchronous=True)
    assert response.status_code == 201, response.text
    validate(response.json(), "statusInfo")
    job_id = response.json()["jobID"]
    assert response.headers["location"].endswith(f"/jobs/{job_id}")
    assert any('rel="monitor"' in link for link in _links(response))
    status = served.wait_for(job_id, "successful")
    validate(status, "statusInfo")
    assert None not in status.values() and "" not in status.values(), status
    rels = {link["rel"]: link["href"] for link in status["links"]}
    assert rels["self"] == f"{served.base_url}/jobs/{job_id}?f=json"
    assert rels[RESULTS_REL].startswith(f"{served.base_url}/jobs/{job_id}/results")
    assert "/runs/flow-run/" + job_id in rels["related"]


def test_job_list_filters_and_number_matched(served: Served) -> None:
    for name in ("a", "b"):
        assert served.execute("hello-world", {"name": name}).status_code == 200
    assert served.execute("bytes", {}).status_code == 200
    response = served.client.get(
        "/jobs",
        params={"f": "json", "processID": "hello-world", "status": "successful", "limit": 1},
    )
    assert response.status_code == 200, response.text
    document = response.json()
    validate(document, "jobList")
    assert len(document["jobs"]) == 1
    assert document["numberMatched"] >= 2
    assert {job["processID"] for job in document["jobs"]} == {"hello-world"}
    everything = served.client.get("/jobs", params={"f": "json", "limit": 100}).json()
    assert everything["numberMatched"] > document["numberMatched"]
    created = [job["created"] for job in everything["jobs"]]
    assert created == sorted(created, reverse=True)
    _ogc_exception(served.client.get("/jobs", params={"status": "nope"}), 400)
    _ogc_exception(served.client.get("/jobs", params={"minDuration": "x"}), 400)


def test_results_raw_document_and_accept(served: Served) -> None:
    raw = served.execute("bytes", {})
    assert raw.status_code == 200
    results_url = f"/jobs/{_job_id(raw)}/results"
    for headers in ({"Accept": "*/*"}, {}, {"Accept": "image/png"}):
        got = served.client.get(results_url, headers=headers)
        assert got.status_code == 200
        assert got.headers["content-type"] == "image/png"
        assert got.content == b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    echoed = served.execute("hello-world", {"name": "doc"}, response="document")
    assert echoed.status_code == 200
    validate(echoed.json(), "results")
    job_results = f"/jobs/{_job_id(echoed)}/results"
    for headers in ({"Accept": "*/*"}, {}, {"Accept": "application/json"}):
        got = served.client.get(job_results, headers=headers)
        assert got.status_code == 200, got.text
        assert got.headers["content-type"].startswith("application/json"), got.headers
        assert got.json() == echoed.json()
    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    page = served.client.get(job_results, headers={"Accept": browser})
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert (
        served.client.get(job_results, params={"f": "html"})
        .headers["content-type"]
        .startswith("text/html")
    )


def test_dismiss_answers_status_info_then_404(served: Served) -> None:
    response = served.execute("sleep", {"seconds": 30}, asynchronous=True)
    assert response.status_code == 201, response.text
    job_id = response.json()["jobID"]
    dismissed = served.client.delete(f"/jobs/{job_id}")
    assert dismissed.status_code == 200, dismissed.text
    assert dismissed.headers["content-type"].startswith("application/json")
    document = dismissed.json()
    validate(document, "statusInfo")
    assert document["status"] == "dismissed" and document["type"] == "process"
    _ogc_exception(served.job(job_id), 404, type_=EXCEPTIONS + "no-such-job")
    _ogc_exception(served.client.delete(f"/jobs/{job_id}"), 404)


def test_unknown_ids_are_ogc_404s(served: Served) -> None:
    unknown = str(uuid.uuid4())
    no_such_job = EXCEPTIONS + "no-such-job"
    _ogc_exception(served.job(unknown), 404, type_=no_such_job)
    _ogc_exception(served.job("not-a-uuid"), 404, type_=no_such_job)
    _ogc_exception(served.client.get(f"/jobs/{unknown}/results"), 404, type_=no_such_job)
    _ogc_exception(served.client.delete(f"/jobs/{unknown}"), 404)
    no_such_process = EXCEPTIONS + "no-such-process"
    _ogc_exception(served.client.get("/processes/nope"), 404, type_=no_such_process)
    _ogc_exception(served.execute("nope", {}), 404, type_=no_such_process)
    for path in ("/jobs/%2F", "/jobs/a%2Fb/results", "/processes/%2F", "/jobs/x/y/z"):
        status, media_type, body = served.raw("GET", path)
        assert status == 404, (path, status, body[:300])
        assert media_type.startswith("application/json"), path
        validate(json.loads(body), "exception")
    _ogc_exception(served.client.put("/jobs"), 405)


@pytest.mark.parametrize(
    "body",
    [b"[1]", b'{"inputs": {"name": "x"}, "subscriber": "x"}', b"{", b"\xff", b'"x"'],
    ids=["array", "subscriber-string", "truncated", "not-utf8", "string"],
)
def test_bad_bodies_are_400(served: Served, body: bytes) -> None:
    response = served.client.post(
        "/processes/hello-world/execution",
        content=body,
        headers={"Content-Type": "application/json"},
    )
    _ogc_exception(response, 400)


def test_oversize_bodies_are_413(served: Served) -> None:
    body = b'{"inputs": {"name": "' + b"x" * (MAX_BYTES * 2) + b'"}}'
    for sent in (body, iter([body[:1000], body[1000:]])):  # with and without Content-Length
        response = served.client.post(
            "/processes/hello-world/execution",
            content=sent,
            headers={"Content-Type": "application/json"},
        )
        document = _ogc_exception(response, 413)
        assert "max_request_bytes" in document["description"]


def test_failed_sync_execution_names_its_job(served: Served) -> None:
    response = served.execute("fail", {"what": "this input"})
    assert response.status_code == 500, response.text
    validate(response.json(), "exception")
    assert "this input" in response.json()["description"]
    location = response.headers["location"]
    assert any(f"<{location}>" in link and 'rel="monitor"' in link for link in _links(response))
    status = served.client.get(location, params={"f": "json"}).json()
    assert status["status"] == "failed", status


def test_conformance_and_html_pages(served: Served) -> None:
    classes = served.client.get("/conformance", params={"f": "json"}).json()["conformsTo"]
    conf = "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/"
    assert {conf + "job-list", conf + "dismiss"} <= set(classes)
    for path in ("/jobs", "/processes/hello-world", "/processes"):
        page = served.client.get(path, params={"f": "html"})
        assert page.status_code == 200, (path, page.text[:300])
        assert page.headers["content-type"].startswith("text/html")
    description = served.client.get("/processes/hello-world", params={"f": "json"}).json()
    assert any("processID=hello-world" in link["href"] for link in description["links"])
    assert served.client.get("/", params={"f": "json"}).status_code == 200  # pygeoapi's own


def test_no_server_error_in_the_log(served: Served) -> None:
    # Runs last for each server: nothing above was answered 5xx but the
    # failed process, and no error escaped to the server (pygeoapi itself
    # logs a traceback with each 4xx it answers, which is not one).
    log = served.log_path.read_text(errors="replace")
    answered_5xx = [
        line
        for line in log.splitlines()
        if re.search(r'HTTP/1\.[01]" 5\d\d', line) and "/processes/fail/execution" not in line
    ]
    assert answered_5xx == [], answered_5xx
    for escaped in ("Exception in ASGI application", "Error handling request", "unexpected error"):
        assert escaped not in log
