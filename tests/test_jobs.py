"""GET /jobs and GET /jobs/{id}: paging, order, every status, foreign flow runs."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import pytest
from ogc import validate

from pygeoapi_prefect.jobs.runs import job_tags

LIST_PROCESSES = {
    "hello-list": "HelloWorld",
    "sleep-list": "pygeoapi_test_processes.SleepProcessor",
    "fail-list": "pygeoapi_test_processes.FailProcessor",
}


@pytest.fixture(scope="module")
def lister(prefect_server, tmp_path_factory):
    """A pygeoapi of its own, so that the job list holds only this module's jobs."""
    from conftest import start_pygeoapi

    server = start_pygeoapi(
        tmp_path_factory.mktemp("lister"),
        prefect_server.api_url,
        processes=LIST_PROCESSES,
        manager={"local": {"max_workers": 1}},
    )
    yield server
    server.stop()


def links_by_rel(document):
    return {link["rel"]: link["href"] for link in document["links"]}


def test_paging_newest_first_with_links(lister):
    ids = []
    for n in range(5):
        response = lister.execute("hello-list", {"name": f"n{n}"})
        assert response.status_code == 200
        ids.append(response.headers["Location"].rsplit("/", 1)[-1])
    newest_first = list(reversed(ids))

    page = lister.client.get("/jobs", params={"limit": 2, "f": "json"}).json()
    validate(page, "jobList")
    assert [job["jobID"] for job in page["jobs"]] == newest_first[:2]
    assert page["numberMatched"] == 5
    links = links_by_rel(page)
    assert "prev" not in links
    assert parse_qs(urlsplit(links["next"]).query) == {"offset": ["2"], "limit": ["2"]}

    page = lister.client.get("/jobs", params={"limit": 2, "offset": 2, "f": "json"}).json()
    assert [job["jobID"] for job in page["jobs"]] == newest_first[2:4]
    links = links_by_rel(page)
    assert parse_qs(urlsplit(links["prev"]).query)["offset"] == ["0"]
    assert parse_qs(urlsplit(links["next"]).query)["offset"] == ["4"]

    page = lister.client.get("/jobs", params={"limit": 2, "offset": 4, "f": "json"}).json()
    assert [job["jobID"] for job in page["jobs"]] == newest_first[4:]
    assert "next" not in links_by_rel(page)


def test_every_status_is_listed(lister, tmp_path):
    beats = tmp_path / "beats"
    running = lister.execute("sleep-list", {"seconds": 20, "beats": str(beats)}, asynchronous=True)
    running_id = running.json()["jobID"]
    # One worker: this one waits behind the running job.
    accepted_id = lister.execute("sleep-list", {"seconds": 0.1}, asynchronous=True).json()["jobID"]
    failed_id = lister.execute("fail-list", {"what": "lists"}, asynchronous=True).json()["jobID"]
    lister.wait_for(running_id, "running")
    done_id = lister.execute("hello-list", {"name": "done"}).headers["Location"].rsplit("/", 1)[-1]

    listed = {
        job["jobID"]: job
        for job in lister.client.get("/jobs", params={"limit": 50, "f": "json"}).json()["jobs"]
    }
    assert listed[running_id]["status"] == "running"
    assert listed[accepted_id]["status"] == "accepted"
    assert listed[done_id]["status"] == "successful"
    assert listed[failed_id]["status"] in ("accepted", "failed")
    for job in listed.values():
        validate(job, "statusInfo")

    assert lister.client.delete(f"/jobs/{running_id}").status_code == 200
    failed = lister.wait_for(failed_id, "failed")
    assert "cannot handle lists" in failed["message"]


def test_status_document_fields(lister, tmp_path):
    job_id = lister.execute(
        "sleep-list", {"seconds": 30, "beats": str(tmp_path / "b")}, asynchronous=True
    ).json()["jobID"]
    accepted_or_running = lister.job(job_id).json()
    validate(accepted_or_running, "statusInfo")
    assert "finished" not in accepted_or_running
    assert accepted_or_running["processID"] == "sleep-list"
    assert accepted_or_running["type"] == "process"

    running = lister.wait_for(job_id, "running")
    validate(running, "statusInfo")
    assert {"created", "started", "updated"} <= set(running)
    assert "finished" not in running
    assert all(value is not None for value in running.values())
    lister.client.delete(f"/jobs/{job_id}")

    done_id = lister.execute("hello-list", {"name": "x"}).headers["Location"].rsplit("/", 1)[-1]
    done = lister.job(done_id).json()
    validate(done, "statusInfo")
    assert done["status"] == "successful"
    assert done["progress"] == 100
    assert done["created"] <= done["started"] <= done["finished"]


def test_foreign_flow_runs_never_break_the_list(lister, prefect_api):
    foreign = [
        prefect_api.create_flow_run(
            flow_name="not-a-job", state={"type": "COMPLETED", "name": "Completed"}, tags=[]
        ),
        prefect_api.create_flow_run(
            flow_name="other-process",
            state={"type": "RUNNING", "name": "Running"},
            tags=job_tags("process-not-in-this-config"),
        ),
        prefect_api.create_flow_run(
            flow_name="hello-list",
            state={"type": "PAUSED", "name": "Paused"},
            tags=["pygeoapi"],
        ),
    ]
    response = lister.client.get("/jobs", params={"limit": 200, "f": "json"})
    assert response.status_code == 200
    listed = {job["jobID"] for job in response.json()["jobs"]}
    for run in foreign:
        assert run["id"] not in listed
        assert lister.job(run["id"]).status_code == 404


def test_jobs_html_page_renders(lister):
    lister.execute("hello-list", {"name": "html"})
    response = lister.client.get("/jobs", params={"f": "html"})
    assert response.status_code == 200
    assert "hello-list" in response.text


def test_job_list_is_paged_by_prefect_not_loaded_whole(lister):
    # 200 is Prefect's page limit: a larger limit is capped, never refused.
    response = lister.client.get("/jobs", params={"limit": 200, "f": "json"})
    assert response.status_code == 200
    assert len(response.json()["jobs"]) <= 200


def test_unknown_and_malformed_job_ids_are_404(lister):
    for job_id in ("00000000-0000-0000-0000-000000000000", "nope", "..%2F..%2Fetc"):
        response = lister.job(job_id)
        assert response.status_code == 404, job_id
        validate(response.json(), "exception")
        results = lister.client.get(f"/jobs/{job_id}/results", params={"f": "json"})
        assert results.status_code == 404
        assert lister.client.delete(f"/jobs/{job_id}").status_code == 404
    time.sleep(0)
