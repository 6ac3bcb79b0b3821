"""Execute requests are checked against the process description before a job exists."""

from __future__ import annotations

import pytest
from ogc import validate

from pygeoapi_prefect.errors import InvalidInputs
from pygeoapi_prefect.execution.validation import check_execute_request
from pygeoapi_prefect.jobs.runs import job_tags

ECHO_COUNT = {"tags": {"all_": job_tags("echo")}}


@pytest.mark.parametrize(
    ("inputs", "outputs", "expected"),
    [
        ({}, None, ["missing required input 'echoInput'", "missing required input 'pause'"]),
        ({"echoInput": "Nope", "pause": 5.5}, None, ["input 'echoInput': 'Nope' is not one of"]),
        ({"echoInput": 42, "pause": 5.5}, None, ["input 'echoInput': 42 is not of type 'string'"]),
        ({"echoInput": "Echo", "pause": 5.5, "extra": 1}, None, ["unknown input 'extra'"]),
        ({"echoInput": ["Echo", "Test"], "pause": 5.5}, None, ["input 'echoInput'"]),
        ({"echoInput": "Echo", "pause": 5.5}, {"nope": {}}, ["unknown output 'nope'"]),
    ],
)
def test_bad_requests_are_400_listing_every_problem_and_make_no_job(
    pygeoapi, prefect_api, inputs, outputs, expected
):
    before = prefect_api.count_flow_runs(ECHO_COUNT)
    body = {"outputs": outputs} if outputs is not None else {}
    response = pygeoapi.execute("echo", inputs, **body)
    assert response.status_code == 400
    document = response.json()
    validate(document, "exception")
    for fragment in expected:
        assert fragment in document["description"], document["description"]
    assert prefect_api.count_flow_runs(ECHO_COUNT) == before


def test_async_bad_request_makes_no_job(pygeoapi, prefect_api):
    before = prefect_api.count_flow_runs(ECHO_COUNT)
    response = pygeoapi.execute("echo", {"echoInput": "x", "pause": 1}, asynchronous=True)
    assert response.status_code == 400
    assert "'x' is not one of" in response.json()["description"]
    assert "1 is not one of" in response.json()["description"]
    assert prefect_api.count_flow_runs(ECHO_COUNT) == before


def test_bounds_and_qualified_values(pygeoapi):
    too_long = pygeoapi.execute("sleep", {"seconds": 601})
    assert too_long.status_code == 400
    assert "601 is greater than the maximum of 600" in too_long.json()["description"]
    qualified = pygeoapi.execute("sleep", {"seconds": {"value": 0.01}})
    # A qualified value passes the check unwrapped; the process gets it as
    # sent (pygeoapi processes expect bare values, so this one then fails:
    # the process's failure, a 500 naming it, with the failed job's Location).
    assert qualified.status_code == 500
    assert "/jobs/" in qualified.headers["Location"]
    assert "Invalid execute request" not in qualified.json()["description"]
    assert "float()" in qualified.json()["description"]


METADATA = {
    "inputs": {
        "n": {"schema": {"type": "integer", "minimum": 1}, "minOccurs": 1, "maxOccurs": 3},
        "box": {"schema": {"type": "object"}, "minOccurs": 0},
        "ref": {"schema": {"type": "string", "format": "uri"}, "minOccurs": 0},
        "opt": {"schema": {"type": "array", "items": {"type": "number"}}, "minOccurs": 0},
    },
    "outputs": {"out": {"schema": {"type": "string"}}},
}


def problems(inputs, outputs=None):
    try:
        check_execute_request("p", METADATA, inputs, outputs)
    except InvalidInputs as exc:
        return exc.problems
    return []


def test_occurrences():
    assert problems({"n": [1, 2, 3]}) == []
    assert problems({"n": [1, 2, 3, 4]}) == ["input 'n': 4 values given, between 1 and 3 allowed"]
    assert problems({"n": [1, 0]}) == ["input 'n': 0 is less than the minimum of 1"]


def test_value_forms():
    assert problems({"n": {"value": 2, "mediaType": "application/json"}}) == []
    assert problems({"n": 1, "ref": {"href": "https://example.org/data.tif"}}) == []
    assert problems({"n": 1, "box": {"anything": True}}) == []
    assert problems({"n": 1, "opt": [1.5, 2]}) == []
    assert problems({"n": 1, "opt": ["a"]}) == ["input 'opt'[0]: 'a' is not of type 'number'"]


def test_inputs_must_be_an_object():
    assert "'inputs' must be a JSON object keyed by input id" in problems(["n"])


def test_broken_process_schema_is_not_the_clients_fault():
    broken = {"inputs": {"x": {"schema": {"type": "no-such-type"}}}}
    check_execute_request("p", broken, {"x": 1}, None)
