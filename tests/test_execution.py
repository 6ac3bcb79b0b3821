"""Sync and async execution of standard pygeoapi processes, each job a flow run."""

from __future__ import annotations

import json
import time

from ogc import validate

from pygeoapi_prefect.jobs.runs import JOB_TAG


def job_id_of(response) -> str:
    return response.headers["Location"].rstrip("/").rsplit("/", 1)[-1]


def test_sync_hello_world_raw(pygeoapi, prefect_api):
    response = pygeoapi.execute("hello-world", {"name": "World", "message": "Hi"})
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json() == {"id": "echo", "value": "Hello World! Hi"}

    job_id = job_id_of(response)
    run = prefect_api.read_flow_run(job_id)
    assert run["state_type"] == "COMPLETED"
    assert set(run["tags"]) >= {JOB_TAG, "pygeoapi.process:hello-world"}
    assert run["parameters"]["inputs"] == {"name": "World", "message": "Hi"}


def test_sync_document_is_results_map(pygeoapi):
    response = pygeoapi.execute("hello-world", {"name": "Doc"}, response="document")
    assert response.status_code == 200
    document = response.json()
    assert document == {"echo": "Hello Doc!"}
    validate(document, "results")


def test_sync_echo(pygeoapi):
    response = pygeoapi.execute("echo", {"echoInput": "Echo", "pause": 5.5})
    assert response.status_code == 200
    assert response.json() == {"id": "echoOutput", "value": "Echo"}


def test_sync_processor_gets_its_job_id_before_running(pygeoapi, prefect_api):
    response = pygeoapi.execute("job-id", {})
    assert response.status_code == 200
    job_id = job_id_of(response)
    assert response.json()["value"] == job_id
    assert prefect_api.read_flow_run(job_id)["state_type"] == "COMPLETED"


def test_async_hello_world(pygeoapi, prefect_api):
    response = pygeoapi.execute("hello-world", {"name": "Async"}, asynchronous=True)
    assert response.status_code == 201
    assert response.headers["Preference-Applied"] == "respond-async"
    status_info = response.json()
    validate(status_info, "statusInfo")
    job_id = status_info["jobID"]
    assert response.headers["Location"].endswith(f"/jobs/{job_id}")

    document = pygeoapi.wait_for(job_id, "successful")
    validate(document, "statusInfo")
    assert document["progress"] == 100
    run = prefect_api.read_flow_run(job_id)
    assert run["state_type"] == "COMPLETED"
    assert run["start_time"] and run["end_time"]
    assert _state_types(prefect_api, job_id) == ["PENDING", "RUNNING", "COMPLETED"]
    assert document["created"] <= document["started"] <= document["finished"]

    results = pygeoapi.client.get(f"/jobs/{job_id}/results", params={"f": "json"})
    assert results.status_code == 200
    assert results.json() == {"id": "echo", "value": "Hello Async!"}


def _state_types(prefect_api, job_id: str) -> list[str]:
    states = prefect_api.request("GET", f"/flow_run_states/?flow_run_id={job_id}").json()
    return [s["type"] for s in sorted(states, key=lambda s: s["timestamp"])]


def test_a_short_async_job_is_not_recorded_running_but_a_longer_one_is(
    pygeoapi_factory, prefect_api
):
    # local.async_visible_after 0.25 s: a job that ends sooner goes from
    # Pending straight to Completed (one Prefect write fewer); one that runs
    # longer is recorded Running while it runs, with its start time.
    pygeoapi = pygeoapi_factory(manager={"local": {"async_visible_after": 0.25}})
    short = pygeoapi.execute("hello-world", {"name": "quick"}, asynchronous=True).json()["jobID"]
    long = pygeoapi.execute("sleep", {"seconds": 1.5}, asynchronous=True).json()["jobID"]
    running = pygeoapi.wait_for(long, "running")
    assert running["started"]
    pygeoapi.wait_for(short, "successful")
    pygeoapi.wait_for(long, "successful")
    assert _state_types(prefect_api, short) == ["PENDING", "COMPLETED"]
    assert _state_types(prefect_api, long) == ["PENDING", "RUNNING", "COMPLETED"]
    assert prefect_api.read_flow_run(long)["start_time"]


def test_async_only_process_runs_async_without_asking(pygeoapi):
    response = pygeoapi.execute("async-only", {"seconds": 0.1})
    assert response.status_code == 201
    job_id = response.json()["jobID"]
    pygeoapi.wait_for(job_id, "successful")


def test_async_document_results(pygeoapi):
    response = pygeoapi.execute(
        "echo", {"echoInput": "Test", "pause": 5.5}, asynchronous=True, response="document"
    )
    job_id = response.json()["jobID"]
    pygeoapi.wait_for(job_id, "successful")
    results = pygeoapi.client.get(f"/jobs/{job_id}/results", params={"f": "json"})
    assert results.json() == {"echoOutput": "Test"}
    validate(results.json(), "results")


def test_binary_output_raw_and_document(pygeoapi):
    raw = pygeoapi.execute("bytes", {})
    assert raw.status_code == 200
    assert raw.headers["Content-Type"] == "image/png"
    assert raw.content.startswith(b"\x89PNG")

    response = pygeoapi.execute("bytes", {}, asynchronous=True, response="document")
    job_id = response.json()["jobID"]
    pygeoapi.wait_for(job_id, "successful")
    document = pygeoapi.client.get(f"/jobs/{job_id}/results", params={"f": "json"}).json()
    assert document["result"]["mediaType"] == "image/png"
    assert document["result"]["encoding"] == "base64"
    validate(document, "results")

    response = pygeoapi.execute("bytes", {}, asynchronous=True)
    job_id = response.json()["jobID"]
    pygeoapi.wait_for(job_id, "successful")
    stored = pygeoapi.client.get(f"/jobs/{job_id}/results")
    assert stored.headers["Content-Type"] == "image/png"
    assert stored.content == raw.content


def test_results_are_stored_as_data_not_pickles(pygeoapi):
    response = pygeoapi.execute("hello-world", {"name": "Store"}, asynchronous=True)
    job_id = response.json()["jobID"]
    pygeoapi.wait_for(job_id, "successful")
    folder = pygeoapi.results_dir / job_id
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["mimetype"] == "application/json"
    assert manifest["encoding"] == "json"
    assert json.loads((folder / "output").read_text()) == {"id": "echo", "value": "Hello Store!"}


def test_results_readable_by_another_instance(pygeoapi, pygeoapi_factory):
    response = pygeoapi.execute("hello-world", {"name": "Shared"}, asynchronous=True)
    job_id = response.json()["jobID"]
    pygeoapi.wait_for(job_id, "successful")
    other = pygeoapi_factory(manager={"results": {"url": str(pygeoapi.results_dir)}})
    assert other.job(job_id).json()["status"] == "successful"
    results = other.client.get(f"/jobs/{job_id}/results", params={"f": "json"})
    assert results.json() == {"id": "echo", "value": "Hello Shared!"}


def test_async_process_may_start_processes_of_its_own(pygeoapi):
    job_id = pygeoapi.execute("spawning", {}, asynchronous=True).json()["jobID"]
    pygeoapi.wait_for(job_id, "successful", timeout=60)
    results = pygeoapi.client.get(f"/jobs/{job_id}/results", params={"f": "json"})
    assert results.json() == {"id": "result", "value": [0, 1, 4, 9]}


def test_progress_reported_by_the_process(pygeoapi):
    job_id = pygeoapi.execute("progress", {"seconds": 3}, asynchronous=True).json()["jobID"]
    deadline = time.monotonic() + 30
    while True:
        job = pygeoapi.job(job_id).json()
        if job.get("progress") == 50:
            break
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    assert job["status"] == "running"
    assert job["message"] == "halfway there"
    done = pygeoapi.wait_for(job_id, "successful")
    assert done["progress"] == 100
    assert done["message"] == "Job complete"


def test_progress_outside_a_job_is_ignored():
    from pygeoapi_prefect import report_progress

    report_progress(10, "nobody listens")


def test_large_raw_results_are_streamed(pygeoapi):
    import hashlib

    job_id = pygeoapi.execute("big", {"megabytes": 32}, asynchronous=True).json()["jobID"]
    pygeoapi.wait_for(job_id, "successful", timeout=60)
    expected = hashlib.sha256(bytes(range(256)) * 4096 * 32).hexdigest()
    digest, received = hashlib.sha256(), 0
    with pygeoapi.client.stream("GET", f"/jobs/{job_id}/results") as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "application/octet-stream"
        assert response.headers["Content-Length"] == str(32 * 1024 * 1024)
        for chunk in response.iter_bytes():
            digest.update(chunk)
            received += len(chunk)
    assert received == 32 * 1024 * 1024
    assert digest.hexdigest() == expected
