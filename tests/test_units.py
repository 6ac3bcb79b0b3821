"""Pure functions: the state table, the job mapping, the results document."""

from __future__ import annotations

import pytest
from prefect.client.schemas.objects import StateType
from pygeoapi.util import JobStatus

import pygeoapi_prefect
from pygeoapi_prefect.jobs.results import results_document
from pygeoapi_prefect.jobs.runs import (
    STATUS_BY_STATE,
    job_from_flow_run,
    normalise_job_id,
    process_id_of,
)


def test_every_prefect_state_is_mapped():
    assert set(STATUS_BY_STATE) == set(StateType)


def test_public_names():
    assert sorted(pygeoapi_prefect.__all__) == ["PrefectManager", "__version__", "report_progress"]
    from pygeoapi_prefect.manager import PrefectManager

    assert pygeoapi_prefect.PrefectManager is PrefectManager


@pytest.mark.parametrize(
    "bad", ["", "nope", "../etc/passwd", "00000000-0000-0000-0000-00000000000/", "a" * 500]
)
def test_job_ids_must_be_uuids(bad):
    assert normalise_job_id(bad) is None


def test_job_id_is_canonicalised():
    assert (
        normalise_job_id("0B8F36A4-0C6E-4B52-9A3A-7B1D0E2C9F11")
        == "0b8f36a4-0c6e-4b52-9a3a-7b1d0e2c9f11"
    )


def test_process_id_from_tags():
    assert process_id_of(["pygeoapi", "pygeoapi.process:hello-world"]) == "hello-world"
    assert process_id_of(["other"]) is None


def run(state_type, **extra):
    return {
        "id": "0b8f36a4-0c6e-4b52-9a3a-7b1d0e2c9f11",
        "created": "2026-01-01T00:00:00.000000Z",
        "updated": "2026-01-01T00:00:05.000000Z",
        "tags": ["pygeoapi", "pygeoapi.process:p"],
        "state_type": state_type,
        "state": {
            "type": state_type,
            "timestamp": "2026-01-01T00:00:04.000000Z",
            "message": extra.pop("message", None),
        },
        "labels": extra.pop("labels", {}),
        **extra,
    }


def test_queued_job_has_no_start_or_finish():
    job = job_from_flow_run(run("PENDING"))
    assert job["status"] == JobStatus.accepted.value
    assert job["started"] == "" and job["finished"] == ""
    assert job["progress"] == 0
    assert job["process_id"] == "p"


def test_running_job_progress_from_labels():
    job = job_from_flow_run(
        run("RUNNING", start_time="2026-01-01T00:00:01.000000Z", labels={"pygeoapi.progress": "42"})
    )
    assert job["status"] == "running"
    assert job["progress"] == 42
    assert job["finished"] == ""


def test_a_pending_run_whose_process_reported_progress_is_running():
    # local.async_visible_after: the job runs before it is recorded Running;
    # progress comes from its own process, so it shows running with it.
    job = job_from_flow_run(
        run("PENDING", labels={"pygeoapi.progress": "50", "pygeoapi.message": "halfway"})
    )
    assert job["status"] == "running"
    assert job["progress"] == 50 and job["message"] == "halfway"
    assert job_from_flow_run(run("PENDING", labels={"pygeoapi.progress": 0}))["status"] == (
        "accepted"
    )


def test_failed_job_keeps_prefect_message():
    job = job_from_flow_run(run("FAILED", message="boom", end_time="2026-01-01T00:00:04.000000Z"))
    assert job["status"] == "failed"
    assert job["message"] == "boom"
    assert job["created"] <= job["started"] <= job["finished"]


def test_crashed_is_failed_and_cancelling_is_dismissed():
    assert job_from_flow_run(run("CRASHED"))["status"] == "failed"
    assert job_from_flow_run(run("CANCELLING"))["status"] == "dismissed"


def test_results_document_shapes():
    ids = ("echo",)
    assert results_document({"id": "echo", "value": "hi"}, "application/json", ids) == {
        "echo": "hi"
    }
    assert results_document({"a": 1, "b": [1]}, "application/json", ("a", "b")) == {
        "a": 1,
        "b": [1],
    }
    assert results_document({"x": 1}, "application/json", ids) == {
        "echo": {"value": {"x": 1}, "mediaType": "application/json"}
    }
    assert results_document(b"\x00\x01", "image/png", ids)["echo"] == {
        "value": "AAE=",
        "encoding": "base64",
        "mediaType": "image/png",
    }
    assert results_document("<a/>", "application/xml", ()) == {
        "result": {"value": "<a/>", "mediaType": "application/xml"}
    }
