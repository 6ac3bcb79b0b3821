"""The job-list filters of OGC API - Processes, over HTTP, applied by Prefect."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import start_pygeoapi
from ogc import validate

from pygeoapi_prefect.jobs.runs import job_tags

PROCESSES = {
    "hello-f": "HelloWorld",
    "sleep-f": "pygeoapi_test_processes.SleepProcessor",
    "fail-f": "pygeoapi_test_processes.FailProcessor",
}


@pytest.fixture(scope="module")
def jobs(prefect_server, tmp_path_factory):
    server = start_pygeoapi(
        tmp_path_factory.mktemp("filters"),
        prefect_server.api_url,
        processes=PROCESSES,
        max_items=500,
    )
    made = {"hello": [], "fail": [], "sleep": []}
    for n in range(3):
        made["hello"].append(server.execute("hello-f", {"name": f"n{n}"}).headers["Location"])
    made["fail"].append(server.execute("fail-f", {}, asynchronous=True).json()["jobID"])
    made["sleep"].append(
        server.execute("sleep-f", {"seconds": 3}, asynchronous=True).json()["jobID"]
    )
    made["hello"] = [url.rsplit("/", 1)[-1] for url in made["hello"]]
    for job_id in made["fail"]:
        server.wait_for(job_id, "failed")
    for job_id in made["sleep"]:
        server.wait_for(job_id, "successful")
    yield server, made
    server.stop()


def listed(server, **params):
    response = server.client.get("/jobs", params={"f": "json", "limit": 100, **params})
    assert response.status_code == 200, response.text
    document = response.json()
    validate(document, "jobList")
    return document


def ids(document):
    return {job["jobID"] for job in document["jobs"]}


def test_process_id(jobs):
    server, made = jobs
    document = listed(server, processID="hello-f")
    assert ids(document) == set(made["hello"])
    assert document["numberMatched"] == 3
    assert ids(listed(server, processID="hello-f,fail-f")) == set(made["hello"] + made["fail"])
    assert ids(listed(server, processID="not-configured")) == set()


def test_status(jobs):
    server, made = jobs
    assert ids(listed(server, status="failed")) == set(made["fail"])
    both = server.client.get(
        "/jobs", params=[("f", "json"), ("status", "failed"), ("status", "successful")]
    ).json()
    assert ids(both) == set(made["hello"] + made["fail"] + made["sleep"])
    assert ids(listed(server, status="running")) == set()


def test_datetime(jobs):
    server, made = jobs
    everything = set().union(*made.values())
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    assert ids(listed(server, datetime=f"{past}/..")) == everything
    assert ids(listed(server, datetime=f"../{past}")) == set()
    assert ids(listed(server, datetime=f"{past}/{future}")) == everything
    assert ids(listed(server, datetime=f"{future}/..")) == set()


def _seconds(stamp):
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def test_durations(jobs):
    server, made = jobs
    everything = listed(server)["jobs"]
    # Durations as the jobs report them (bookkeeping on a loaded machine can
    # stretch a short job): the filters must agree with these exactly.
    durations = {
        job["jobID"]: _seconds(job["finished"]) - _seconds(job["started"]) for job in everything
    }
    at_least_2 = {job_id for job_id, seconds in durations.items() if seconds >= 2}
    assert set(made["sleep"]) <= at_least_2  # it slept 3 s
    assert ids(listed(server, minDuration="2")) == at_least_2
    at_most_2 = {job_id for job_id, seconds in durations.items() if seconds <= 2}
    assert ids(listed(server, maxDuration="2")) == at_most_2
    assert set(made["hello"]) <= at_most_2  # sync jobs recorded at once
    document = listed(server, minDuration="2", limit=1)
    assert document["numberMatched"] == len(at_least_2)


def test_type(jobs):
    server, made = jobs
    assert ids(listed(server, type="process")) == set().union(*made.values())
    assert ids(listed(server, type="something-else")) == set()


def test_filters_combine_with_paging_and_stay_in_links(jobs):
    server, made = jobs
    page = listed(server, processID="hello-f", status="successful", limit=2)
    assert len(page["jobs"]) == 2
    assert page["numberMatched"] == 3
    next_link = next(link["href"] for link in page["links"] if link["rel"] == "next")
    query = parse_qs(urlsplit(next_link).query)
    assert query["processID"] == ["hello-f"]
    assert query["status"] == ["successful"]
    following = server.client.get(next_link.replace("http://127.0.0.1", "http://127.0.0.1")).json()
    assert len(following["jobs"]) == 1
    assert ids(page) | ids(following) == set(made["hello"])


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"status": "done"}, "status: 'done' is not one of"),
        ({"datetime": "yesterday"}, "datetime: 'yesterday' is not an RFC 3339 date-time"),
        ({"datetime": "../.."}, "datetime: an interval needs at least one end"),
        ({"minDuration": "-1"}, "minDuration: must be zero or more seconds"),
        ({"maxDuration": "soon"}, "maxDuration: 'soon' is not a number of seconds"),
    ],
)
def test_bad_filters_are_400(jobs, params, fragment):
    server, _ = jobs
    response = server.client.get("/jobs", params={"f": "json", **params})
    assert response.status_code == 400
    validate(response.json(), "exception")
    assert fragment in response.json()["description"]


def test_pages_larger_than_prefects_limit(jobs, prefect_api):
    server, _ = jobs
    for _ in range(205):
        prefect_api.create_flow_run(
            flow_name="hello-f",
            state={"type": "COMPLETED", "name": "Completed"},
            tags=job_tags("hello-f"),
        )
    document = listed(server, processID="hello-f", limit=300)
    assert len(document["jobs"]) == 208
    assert document["numberMatched"] == 208
    assert len(ids(document)) == 208
    time.sleep(0)


def test_manager_takes_raw_filters_as_pygeoapi_would_pass_them(jobs, prefect_server):
    """The signature the proposed pygeoapi change (docs/) calls."""
    from pygeoapi_prefect.errors import InvalidParameter
    from pygeoapi_prefect.manager import PrefectManager

    server, made = jobs
    manager = PrefectManager(
        {
            "name": "pygeoapi_prefect.manager.PrefectManager",
            "connection": prefect_server.api_url,
            "processes": {pid: {"processor": {"name": name}} for pid, name in PROCESSES.items()},
        }
    )
    try:
        found = manager.get_jobs(limit=50, offset=0, filters={"status": ["failed"]})
        assert {job["identifier"] for job in found["jobs"]} == set(made["fail"])
        with pytest.raises(InvalidParameter, match="status"):
            manager.get_jobs(filters={"status": ["nope"]})
        with pytest.raises(ValueError):
            manager.get_jobs(filters={"minDuration": ["-3"]})
    finally:
        manager.close()
