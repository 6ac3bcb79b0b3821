"""DELETE /jobs/{id}: the work stops, results go, the job is gone for pygeoapi."""

from __future__ import annotations

import time

from ogc import validate


def size(path):
    return path.stat().st_size if path.exists() else 0


def test_dismiss_running_job_stops_it(pygeoapi, prefect_api, tmp_path):
    beats = tmp_path / "beats"
    job_id = pygeoapi.execute(
        "sleep", {"seconds": 60, "beats": str(beats)}, asynchronous=True
    ).json()["jobID"]
    pygeoapi.wait_for(job_id, "running")
    deadline = time.monotonic() + 10
    while size(beats) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert size(beats) >= 3, "the job never started beating"

    started = time.monotonic()
    response = pygeoapi.client.delete(f"/jobs/{job_id}")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    document = response.json()
    validate(document, "statusInfo")
    assert document["status"] == "dismissed"
    assert document["jobID"] == job_id

    # Stopped within 5 s of the request: the beats stop growing.
    time.sleep(max(0.0, 5 - (time.monotonic() - started)) / 5)
    settled = size(beats)
    time.sleep(1.0)
    assert size(beats) == settled, "the dismissed job is still working"

    assert pygeoapi.job(job_id).status_code == 404
    assert pygeoapi.client.get(f"/jobs/{job_id}/results").status_code == 404
    assert pygeoapi.client.delete(f"/jobs/{job_id}").status_code == 404
    assert not (pygeoapi.results_dir / job_id).exists()
    run = prefect_api.read_flow_run(job_id)
    assert run["state_type"] == "CANCELLED"
    listed = pygeoapi.client.get("/jobs", params={"limit": 200, "f": "json"}).json()["jobs"]
    assert job_id not in {job["jobID"] for job in listed}


def test_dismiss_finished_job_deletes_results(pygeoapi):
    job_id = pygeoapi.execute("hello-world", {"name": "gone"}, asynchronous=True).json()["jobID"]
    pygeoapi.wait_for(job_id, "successful")
    assert (pygeoapi.results_dir / job_id / "output").exists()
    assert pygeoapi.client.delete(f"/jobs/{job_id}").status_code == 200
    assert not (pygeoapi.results_dir / job_id).exists()
    assert pygeoapi.job(job_id).status_code == 404


def test_dismiss_queued_job_never_runs(pygeoapi_factory, prefect_api, tmp_path):
    server = pygeoapi_factory(manager={"local": {"max_workers": 1}})
    blocker = server.execute("sleep", {"seconds": 30}, asynchronous=True).json()["jobID"]
    server.wait_for(blocker, "running")
    beats = tmp_path / "queued-beats"
    queued = server.execute("sleep", {"seconds": 1, "beats": str(beats)}, asynchronous=True).json()[
        "jobID"
    ]
    assert server.job(queued).json()["status"] == "accepted"
    assert server.client.delete(f"/jobs/{queued}").status_code == 200
    assert server.client.delete(f"/jobs/{blocker}").status_code == 200
    time.sleep(1.5)
    assert not beats.exists()
    assert prefect_api.read_flow_run(queued)["state_type"] == "CANCELLED"


def test_cancel_from_prefect_stops_the_job(pygeoapi, prefect_api, tmp_path):
    """A cancellation made in Prefect (UI, CLI, another pygeoapi) stops the job too."""
    beats = tmp_path / "beats"
    job_id = pygeoapi.execute(
        "sleep", {"seconds": 60, "beats": str(beats)}, asynchronous=True
    ).json()["jobID"]
    pygeoapi.wait_for(job_id, "running")
    prefect_api.set_state(job_id, {"type": "CANCELLING", "name": "Cancelling"}, force=True)
    assert pygeoapi.job(job_id).json()["status"] == "dismissed"
    time.sleep(3)
    settled = size(beats)
    time.sleep(1.0)
    assert size(beats) == settled
    assert prefect_api.read_flow_run(job_id)["state_type"] == "CANCELLED"
    assert not (pygeoapi.results_dir / job_id).exists()


def test_dismiss_through_another_instance_stops_a_queued_job(
    pygeoapi_factory, prefect_api, tmp_path
):
    """Instance A holds the job in its queue; the DELETE reaches instance B."""
    a = pygeoapi_factory(manager={"local": {"max_workers": 1}})
    b = pygeoapi_factory(manager={"results": {"url": str(a.results_dir)}})
    blocker = a.execute("sleep", {"seconds": 4}, asynchronous=True).json()["jobID"]
    a.wait_for(blocker, "running")
    beats = tmp_path / "never"
    queued = a.execute("sleep", {"seconds": 1, "beats": str(beats)}, asynchronous=True).json()[
        "jobID"
    ]
    response = b.client.delete(f"/jobs/{queued}")
    assert response.status_code == 200
    assert a.job(queued).status_code == 404
    a.wait_for(blocker, "successful", timeout=30)
    deadline = time.monotonic() + 10
    while prefect_api.read_flow_run(queued)["state_type"] != "CANCELLED":
        assert time.monotonic() < deadline, prefect_api.read_flow_run(queued)["state_type"]
        time.sleep(0.2)
    assert not beats.exists(), "the dismissed job ran"


def test_dismiss_through_another_instance_stops_a_running_job(
    pygeoapi_factory, prefect_api, tmp_path
):
    a = pygeoapi_factory()
    b = pygeoapi_factory(manager={"results": {"url": str(a.results_dir)}})
    beats = tmp_path / "beats"
    job_id = a.execute("sleep", {"seconds": 60, "beats": str(beats)}, asynchronous=True).json()[
        "jobID"
    ]
    a.wait_for(job_id, "running")
    assert b.client.delete(f"/jobs/{job_id}").status_code == 200
    time.sleep(3)  # within cancel_check_seconds (1 s) and the kill
    settled = size(beats)
    time.sleep(1.0)
    assert size(beats) == settled, "the dismissed job is still working"
    assert prefect_api.read_flow_run(job_id)["state_type"] == "CANCELLED"
