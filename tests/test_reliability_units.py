"""Small parts of the fault handling: config errors, the write gate, transition ids."""

from __future__ import annotations

import threading
import time

import pytest

from pygeoapi_prefect.config import load_config
from pygeoapi_prefect.errors import ConfigError
from pygeoapi_prefect.execution.heartbeat import HEARTBEAT_EVENT, heartbeat_event, zombie_automation
from pygeoapi_prefect.prefect.api import EXTRA, NORMAL, URGENT, _WriteGate
from pygeoapi_prefect.prefect.states import running_transition_id

NAME = "pygeoapi_prefect.manager.PrefectManager"


@pytest.mark.parametrize(
    ("heartbeat", "key"),
    [
        ({"interval": 30, "zombie_timeout": 20}, "server.manager.heartbeat: "),
        ({"zombie_timeout": 5}, "server.manager.heartbeat.zombie_timeout"),
        ({"interval": 0}, "server.manager.heartbeat.interval"),
    ],
)
def test_heartbeat_errors_name_the_key(heartbeat, key):
    with pytest.raises(ConfigError, match=key):
        load_config({"name": NAME, "heartbeat": heartbeat})


def test_instance_identity_is_stable_and_configurable(monkeypatch, tmp_path):
    monkeypatch.setenv("PYGEOAPI_CONFIG", str(tmp_path / "a.yml"))
    first = load_config({"name": NAME}).instance_id()
    assert first == load_config({"name": NAME}).instance_id()
    monkeypatch.setenv("PYGEOAPI_CONFIG", str(tmp_path / "b.yml"))
    assert load_config({"name": NAME}).instance_id() != first
    named = load_config({"name": NAME, "local": {"instance": "api-1"}})
    assert named.instance_id() == "api-1"


def test_running_transition_id_is_the_same_everywhere_and_per_job():
    assert running_transition_id("a") == running_transition_id("a")
    assert running_transition_id("a") != running_transition_id("b")


def test_automation_watches_our_heartbeats_of_job_runs():
    automation = zombie_automation(12)
    trigger = automation["trigger"]
    assert trigger["after"] == [HEARTBEAT_EVENT]
    assert trigger["within"] == 12
    assert trigger["match_related"]["prefect.resource.id"] == "prefect.tag.pygeoapi"
    event = heartbeat_event("0b8f")
    assert event["event"] == HEARTBEAT_EVENT
    assert event["resource"]["prefect.resource.id"] == "prefect.flow-run.0b8f"


def test_write_gate_goes_by_rank_then_in_arrival_order():
    # Creates (what a client waits for) first, then a job's own steps, then
    # the Prefect UI's extras (run names, summaries), each rank in its order.
    gate = _WriteGate(1)
    assert gate.acquire(1)
    order: list[str] = []

    def writer(name: str, rank: int) -> None:
        assert gate.acquire(10, rank=rank)
        order.append(name)
        gate.release()

    threads = []
    arrivals = [
        ("name-1", EXTRA),
        ("state-1", NORMAL),
        ("create-1", URGENT),
        ("name-2", EXTRA),
        ("state-2", NORMAL),
        ("create-2", URGENT),
    ]
    for name, rank in arrivals:
        thread = threading.Thread(target=writer, args=(name, rank))
        thread.start()
        threads.append(thread)
        deadline = time.monotonic() + 10
        while sum(map(len, gate._queues)) < len(threads):  # queued in this order
            assert time.monotonic() < deadline
            time.sleep(0.01)
    gate.release()
    for thread in threads:
        thread.join(10)
    assert order == ["create-1", "create-2", "state-1", "state-2", "name-1", "name-2"]


def test_write_gate_gives_up_after_its_time():
    gate = _WriteGate(1)
    assert gate.acquire(1)
    assert not gate.acquire(0.2)
    gate.release()
    assert gate.acquire(0.2)
