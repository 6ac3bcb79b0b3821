"""Job events on pygeoapi's pub/sub broker: a real mosquitto, paho-mqtt subscribing."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from conftest import Pygeoapi, start_pygeoapi
from mqtt import Broker, Subscriber

from pygeoapi_prefect.jobs.runs import JOBS_URL_LABEL
from pygeoapi_prefect.prefect.api import PrefectAPI
from pygeoapi_prefect.prefect.server import PrefectServer
from pygeoapi_prefect.prefect.states import state

CHANNEL = "pygeoapi-test"
#: The job watcher, quick: Prefect's event persister writes every 5 s.
WATCH = {"interval": 1, "settle": 7}
PROCESSES: dict[str, str | dict[str, Any]] = {
    "hello-world": "HelloWorld",
    "sleep": "pygeoapi_test_processes.SleepProcessor",
    "fail": "pygeoapi_test_processes.FailProcessor",
    "progress": "pygeoapi_test_processes.ProgressProcessor",
}


def _pubsub(broker: Broker) -> dict[str, Any]:
    return {"pubsub": {"name": "MQTT", "broker": {"url": broker.url, "channel": CHANNEL}}}


@pytest.fixture(scope="module")
def module_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    server = Broker(tmp_path_factory.mktemp("mosquitto"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def served(
    module_broker: Broker, prefect_server: PrefectServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pygeoapi]:
    server = start_pygeoapi(
        tmp_path_factory.mktemp("pygeoapi-events"),
        prefect_server.api_url,
        processes=PROCESSES,
        manager={"watch": WATCH},
        extra=_pubsub(module_broker),
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def subscriber(module_broker: Broker) -> Iterator[Subscriber]:
    client = Subscriber(module_broker)
    try:
        yield client
    finally:
        client.close()


def _check_cloud_event(topic: str, event: dict[str, Any], server: Pygeoapi) -> None:
    # The required attributes of CloudEvents 1.0, and ours.
    assert event["specversion"] == "1.0"
    assert isinstance(event["id"], str) and event["id"]
    assert event["source"] == f"{server.base_url}/jobs"
    assert event["type"].startswith("org.pygeoapi.job.")
    assert event["datacontenttype"] == "application/json"
    datetime.fromisoformat(event["time"].replace("Z", "+00:00"))
    data = event["data"]
    assert data["jobID"] == event["subject"]
    assert topic == f"{CHANNEL}/processes/{data['processID']}/jobs/{event['subject']}"
    kind = event["type"].removeprefix("org.pygeoapi.job.")
    assert data["status"] == ("running" if kind == "progress" else kind)


def _kinds(events: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [e["type"].removeprefix("org.pygeoapi.job.") for _, e in events]


def test_a_fast_sync_job_is_one_successful_event(served, subscriber):
    response = served.execute("hello-world", {"name": "events"})
    assert response.status_code == 200
    job_id = response.headers["Location"].rsplit("/", 1)[-1]
    events = subscriber.wait_for(job_id, "successful")
    assert _kinds(events) == ["successful"]
    topic, event = events[0]
    _check_cloud_event(topic, event, served)
    document = served.job(job_id).json()
    for key in ("jobID", "processID", "status", "progress", "created"):
        assert event["data"][key] == document[key]


def test_a_slow_sync_job_is_running_then_successful(served, subscriber):
    response = served.execute("sleep", {"seconds": 1.5})
    assert response.status_code == 200
    job_id = response.headers["Location"].rsplit("/", 1)[-1]
    events = subscriber.wait_for(job_id, "successful")
    assert _kinds(events) == ["running", "successful"]
    for topic, event in events:
        _check_cloud_event(topic, event, served)
    assert len({e["id"] for _, e in events}) == 2
    assert "finished" not in events[0][1]["data"]
    assert events[1][1]["data"]["progress"] == 100


def test_an_async_job_publishes_each_step_in_order(served, subscriber):
    response = served.execute("progress", {"seconds": 1}, asynchronous=True)
    assert response.status_code == 201
    job_id = response.json()["jobID"]
    events = subscriber.wait_for(job_id, "successful")
    assert _kinds(events) == ["accepted", "running", "progress", "successful"]
    for topic, event in events:
        _check_cloud_event(topic, event, served)
    progress = events[2][1]["data"]
    assert (progress["progress"], progress["message"]) == (50, "halfway there")
    # Results are there once the event says so.
    assert served.client.get(f"/jobs/{job_id}/results", params={"f": "json"}).status_code == 200


def test_a_failed_async_job_carries_its_message(served, subscriber):
    response = served.execute("fail", {"what": "events"}, asynchronous=True)
    job_id = response.json()["jobID"]
    events = subscriber.wait_for(job_id, "failed")
    assert _kinds(events) == ["accepted", "running", "failed"]
    assert "cannot handle events" in events[-1][1]["data"]["message"]


def test_a_dismissed_job_ends_with_a_dismissed_event(served, subscriber):
    response = served.execute("sleep", {"seconds": 60}, asynchronous=True)
    job_id = response.json()["jobID"]
    subscriber.wait_for(job_id, "running")
    assert served.client.delete(f"/jobs/{job_id}").status_code == 200
    events = subscriber.wait_for(job_id, "dismissed")
    assert _kinds(events) == ["accepted", "running", "dismissed"]
    _check_cloud_event(*events[-1], served)
    assert served.job(job_id).status_code == 404


def test_a_broker_that_is_down_fails_no_job(pygeoapi_factory, tmp_path):
    down = Broker(tmp_path)
    down.start()
    server = pygeoapi_factory(processes=PROCESSES, extra=_pubsub(down))
    down.stop()
    # The client's own bound: a request held up by the broker would raise a timeout.
    server.client.timeout = 20
    sync = server.execute("hello-world", {"name": "nobody listens"})
    assert sync.status_code == 200
    assert sync.json() == {"id": "echo", "value": "Hello nobody listens!"}
    jobs = [server.execute("progress", {"seconds": 0.2}, asynchronous=True) for _ in range(3)]
    for job in jobs:
        assert job.status_code == 201
        document = server.wait_for(job.json()["jobID"], "successful", "failed")
        assert document["status"] == "successful"
    # The broker back: events flow again (the publisher reconnects).
    down.start()
    subscriber = Subscriber(down)
    try:
        job_id = None
        for _ in range(20):  # the publisher retries its connection every few seconds
            answer = server.execute("hello-world", {"name": str(uuid.uuid4())})
            job_id = answer.headers["Location"].rsplit("/", 1)[-1]
            try:
                subscriber.wait_for(job_id, "successful", timeout=1)
                break
            except AssertionError:
                continue
        else:
            raise AssertionError("no event after the broker came back")
    finally:
        subscriber.close()
        down.stop()


# -- ends made outside pygeoapi, published by the job watcher ----------------------


def _run_outside_pygeoapi(prefect_api: PrefectAPI, server: Pygeoapi, process_id: str) -> str:
    """A running job that no pygeoapi process runs (its server died, say)."""
    run = prefect_api.create_flow_run(
        flow_name=process_id,
        state=state("RUNNING", "Job running"),
        tags=["pygeoapi", f"pygeoapi.process:{process_id}"],
        labels={JOBS_URL_LABEL: f"{server.base_url}/jobs"},
        parameters={},
    )
    return str(run["id"])


def _crash(prefect_api: PrefectAPI, job_id: str, message: str) -> None:
    # As the zombie automation's action and Prefect's workers do.
    prefect_api.set_state(
        job_id, {"type": "CRASHED", "name": "Crashed", "message": message}, force=True
    )


def test_a_run_crashed_in_prefect_is_one_failed_event_and_counted(served, subscriber, prefect_api):
    from test_metrics import scrape, total

    from pygeoapi_prefect.metrics import PREFIX

    finished = PREFIX + "jobs_finished_total"
    before, _ = scrape(served.base_url)
    job_id = _run_outside_pygeoapi(prefect_api, served, "sleep")
    _crash(prefect_api, job_id, "The job's process stopped sending heartbeats")
    events = subscriber.wait_for(job_id, "failed")
    assert _kinds(events) == ["failed"]
    topic, event = events[0]
    _check_cloud_event(topic, event, served)
    assert event["data"]["message"] == "The job's process stopped sending heartbeats"
    assert event["data"]["status"] == served.job(job_id).json()["status"] == "failed"
    after, _ = scrape(served.base_url)
    grew = total(after, finished, process="sleep", outcome="failed") - total(
        before, finished, process="sleep", outcome="failed"
    )
    assert grew == 1


def test_a_job_cancelled_in_prefect_is_one_dismissed_event(served, subscriber, prefect_api):
    cancelled = served.execute("sleep", {"seconds": 60}, asynchronous=True).json()["jobID"]
    dismissed = served.execute("sleep", {"seconds": 60}, asynchronous=True).json()["jobID"]
    subscriber.wait_for(cancelled, "running")
    subscriber.wait_for(dismissed, "running")
    # As the Prefect UI's "Cancel" does; the local pool then kills the job, sets Cancelled.
    prefect_api.set_state(
        cancelled,
        {"type": "CANCELLING", "name": "Cancelling", "message": "Cancelled in the Prefect UI"},
        force=True,
    )
    assert served.client.delete(f"/jobs/{dismissed}").status_code == 200
    events = subscriber.wait_for(cancelled, "dismissed")
    assert events[-1][1]["data"]["message"] == "Cancelled in the Prefect UI"
    _check_cloud_event(*events[-1], served)
    assert served.job(cancelled).json()["status"] == "dismissed"
    # A later end, read after both jobs' Cancelling and Cancelled (windows are read in
    # order): by then a second dismissed event of either would have come.
    sentinel = _run_outside_pygeoapi(prefect_api, served, "hello-world")
    _crash(prefect_api, sentinel, "sentinel")
    subscriber.wait_for(sentinel, "failed")
    assert _kinds(subscriber.job_events(cancelled)) == ["accepted", "running", "dismissed"]
    assert _kinds(subscriber.job_events(dismissed)) == ["accepted", "running", "dismissed"]


@pytest.mark.parametrize(
    ("state_type", "initial", "message", "deployed", "published", "counted"),
    [
        ("CRASHED", "RUNNING", "zombie", False, True, True),
        ("CANCELLING", "RUNNING", "from the UI", False, True, False),
        ("CANCELLING", "RUNNING", "from the UI", True, True, True),
        ("CANCELLING", "RUNNING", "Dismissed through the OGC API", False, False, False),
        ("CANCELLED", "CANCELLING", "Cancelled: the job's process was stopped", True, False, False),
        ("CANCELLED", "PENDING", "forced", False, True, False),
        ("COMPLETED", "RUNNING", "Job complete", False, False, False),
        ("COMPLETED", "RUNNING", "Job complete", True, False, True),
        ("FAILED", "RUNNING", "boom", True, False, True),
        # Recorded by a local job's own process: its server process was gone.
        ("COMPLETED", "RUNNING", "Job complete", False, True, True),
        ("FAILED", "RUNNING", "boom", False, True, True),
    ],
    ids=[
        "crashed",
        "cancelling",
        "cancelling-deployed",
        "ogc-dismiss",
        "cancelled-after-cancelling",
        "cancelled-directly",
        "completed-local",
        "completed-deployed",
        "failed-deployed",
        "completed-without-server",
        "failed-without-server",
    ],
)
def test_which_ends_the_watcher_publishes_and_counts(
    request, state_type, initial, message, deployed, published, counted
):
    from pygeoapi_prefect.execution.watcher import end_of
    from pygeoapi_prefect.prefect.states import WITHOUT_SERVER

    job_id = "3f2f762b-47ee-475f-85e7-aa23d7efc6ee"
    alone = request.node.callspec.id.endswith("without-server")
    name = state_type.capitalize() + (WITHOUT_SERVER if alone else "")
    related = [
        {"prefect.resource.id": "prefect.tag.pygeoapi", "prefect.resource.role": "tag"},
        {"prefect.resource.id": "prefect.tag.pygeoapi.process:x", "prefect.resource.role": "tag"},
    ]
    if deployed:
        related.append(
            {"prefect.resource.id": "prefect.deployment.1", "prefect.resource.role": "deployment"}
        )
    end = end_of(
        {
            "id": "01a2322b-0475-717d-a4f1-177f4e5ee0b5",
            "event": f"prefect.flow-run.{state_type.capitalize()}",
            "resource": {
                "prefect.resource.id": f"prefect.flow-run.{job_id}",
                "prefect.state-type": state_type,
                "prefect.state-name": name,
                "prefect.state-message": message,
            },
            "related": related,
            "payload": {"initial_state": {"type": initial}},
        }
    )
    assert end is not None
    assert (end.job_id, end.process_id) == (job_id, "x")
    handled = not end.seen_before
    assert (handled and not end.published_elsewhere) == published
    assert (handled and not end.counted_elsewhere) == counted


def test_events_of_other_runs_are_no_job_ends():
    from pygeoapi_prefect.execution.watcher import end_of

    event = {
        "resource": {"prefect.resource.id": "prefect.flow-run.1", "prefect.state-type": "CRASHED"},
        "related": [{"prefect.resource.id": "prefect.tag.other", "prefect.resource.role": "tag"}],
    }
    assert end_of(event) is None
