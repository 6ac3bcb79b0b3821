"""Job events on pygeoapi's pub/sub broker: a real mosquitto, paho-mqtt subscribing."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from conftest import Pygeoapi, start_pygeoapi
from mqtt import Broker, Subscriber

from pygeoapi_prefect.prefect.server import PrefectServer

CHANNEL = "pygeoapi-test"
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
