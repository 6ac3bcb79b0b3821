"""Every response shape the manager has a hand in, against the official OGC schemas.

OGC API - Processes - Part 1: Core 1.0 (OGC 18-062r2); requirement ids in the
test names' docstrings. Local copies of the schemas are in tests/data.
"""

from __future__ import annotations

import pytest
from ogc import validate

from pygeoapi_prefect.errors import EXCEPTION_TYPES

CONF = "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/"


def get(server, path, **params):
    return server.client.get(path, params={"f": "json", **params})


def test_landing_conformance_and_processes(pygeoapi):
    """/req/core/landingpage-success, /req/core/conformance-success, /req/core/process-list-success,
    /req/ogc-process-description/json-encoding."""
    validate(get(pygeoapi, "/").json(), "landingPage")
    conformance = get(pygeoapi, "/conformance").json()
    validate(conformance, "confClasses")
    for name in ("core", "job-list", "dismiss", "callback", "ogc-process-description"):
        assert CONF + name in conformance["conformsTo"]
    validate(get(pygeoapi, "/processes").json(), "processList")
    for process_id in ("hello-world", "echo"):
        validate(get(pygeoapi, f"/processes/{process_id}").json(), "process")


def test_sync_raw_and_document(pygeoapi):
    """/req/core/process-execute-sync-raw-value-one, /req/core/process-execute-sync-document."""
    raw = pygeoapi.execute("hello-world", {"name": "c"})
    assert raw.status_code == 200
    assert raw.json() == {"id": "echo", "value": "Hello c!"}
    document = pygeoapi.execute("hello-world", {"name": "c"}, response="document")
    validate(document.json(), "results")


def test_async_job_lifecycle(pygeoapi):
    """/req/core/process-execute-success-async, /req/core/job-success,
    /req/core/job-results-success-document, /req/job-list/job-list-success,
    /req/dismiss/job-dismiss-success."""
    created = pygeoapi.execute("hello-world", {"name": "c"}, asynchronous=True, response="document")
    assert created.status_code == 201
    validate(created.json(), "statusInfo")
    job_id = created.json()["jobID"]
    status = pygeoapi.wait_for(job_id, "successful")
    validate(status, "statusInfo")
    validate(get(pygeoapi, f"/jobs/{job_id}/results").json(), "results")
    validate(get(pygeoapi, "/jobs", limit=5).json(), "jobList")
    dismissed = pygeoapi.client.delete(f"/jobs/{job_id}")
    assert dismissed.headers["Content-Type"].startswith("application/json")
    validate(dismissed.json(), "statusInfo")


def assert_exception(response, status, ogc_type=None):
    assert response.status_code == status, response.text
    document = response.json()
    validate(document, "exception")
    if ogc_type is not None:
        assert document["type"] == EXCEPTION_TYPES[ogc_type]
    return document


def test_exceptions(pygeoapi):
    """/req/core/process-exception/no-such-process, /req/core/job-exception-no-such-job,
    /req/core/job-results-exception/results-not-ready, /req/core/job-results-failed,
    input validation (400)."""
    assert_exception(get(pygeoapi, "/processes/nope"), 404, "NoSuchProcess")
    assert_exception(pygeoapi.execute("nope", {}), 404, "NoSuchProcess")
    missing = "00000000-0000-0000-0000-000000000000"
    assert_exception(get(pygeoapi, f"/jobs/{missing}"), 404, "NoSuchJob")
    assert_exception(get(pygeoapi, f"/jobs/{missing}/results"), 404, "NoSuchJob")
    assert_exception(pygeoapi.client.delete(f"/jobs/{missing}"), 404, "NoSuchJob")
    assert_exception(get(pygeoapi, "/jobs/not/a/job"), 404)

    running = pygeoapi.execute("sleep", {"seconds": 20}, asynchronous=True).json()["jobID"]
    pygeoapi.wait_for(running, "running")
    assert_exception(get(pygeoapi, f"/jobs/{running}/results"), 404, "ResultNotReady")
    pygeoapi.client.delete(f"/jobs/{running}")

    failed = pygeoapi.execute("fail", {}, asynchronous=True).json()["jobID"]
    pygeoapi.wait_for(failed, "failed")
    # The job's own failure: a plain process error is the server's (500), with its message.
    document = assert_exception(get(pygeoapi, f"/jobs/{failed}/results"), 500)
    assert document["type"] == "NoApplicableCode"
    assert document["description"] == pygeoapi.job(failed).json()["message"]

    assert_exception(pygeoapi.execute("echo", {"echoInput": 1}), 400)
    assert_exception(get(pygeoapi, "/jobs", status="nope"), 400)


@pytest.mark.parametrize("path", ["/jobs", "/jobs/00000000-0000-0000-0000-000000000000"])
def test_unavailable_prefect_is_an_exception_document(pygeoapi_factory, path):
    from pygeoapi_prefect.prefect.server import free_port

    server = pygeoapi_factory(prefect_api_url=f"http://127.0.0.1:{free_port()}/api")
    assert_exception(get(server, path), 503)
