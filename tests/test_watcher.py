"""The job watcher against a real Prefect server: each window read by one process, once."""

from __future__ import annotations

import math
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pygeoapi_prefect.config import load_config
from pygeoapi_prefect.errors import ConfigError
from pygeoapi_prefect.execution.engine import Engine
from pygeoapi_prefect.execution.watcher import Watcher
from pygeoapi_prefect.prefect.api import PrefectAPI
from pygeoapi_prefect.prefect.states import state

INTERVAL, SETTLE = 1.0, 6.0


def _engine(api_url: str, results: Path, process_id: str) -> Engine:
    # Built, never started: no lease, no pool, no thread of its own.
    return Engine(
        load_config(
            {
                "name": "pygeoapi_prefect.manager.PrefectManager",
                "connection": api_url,
                "results": {"url": str(results)},
                "metrics": {"enabled": False},
                "watch": {"enabled": True, "interval": INTERVAL, "settle": SETTLE, "catch_up": 10},
                "processes": {process_id: {"processor": {"name": "HelloWorld"}}},
            }
        )
    )


@pytest.fixture
def replicas(prefect_server, tmp_path) -> Iterator[list[Watcher]]:
    """Two server processes of one installation (one config), each with its watcher."""
    process_id = f"watched-{uuid.uuid4().hex[:8]}"  # a scope of its own
    engines = [_engine(prefect_server.api_url, tmp_path, process_id) for _ in range(2)]
    watchers = [Watcher(engine) for engine in engines]
    try:
        yield watchers
    finally:
        for watcher in watchers:
            watcher.close()
        for engine in engines:
            engine.close()


def test_two_processes_read_each_window_once_and_each_end_once(replicas, prefect_api: PrefectAPI):
    process_id = next(iter(replicas[0].engine.config.processes))
    assert replicas[0].scope() == replicas[1].scope()
    run = prefect_api.create_flow_run(
        flow_name=process_id,
        state=state("RUNNING", "Job running"),
        tags=["pygeoapi", f"pygeoapi.process:{process_id}"],
        labels={},
        parameters={},
    )
    prefect_api.set_state(
        str(run["id"]), {"type": "CRASHED", "name": "Crashed", "message": "lost"}, force=True
    )
    crashed_at = replicas[0].now()
    # The window that holds the crash (2 s later for the clock's 1 s resolution).
    target = math.floor((crashed_at + SETTLE) / INTERVAL) + 2
    barrier = threading.Barrier(2)

    def attempt(watcher: Watcher) -> None:
        barrier.wait()  # both at once, as two processes of one server
        watcher.pass_once()

    # Windows are read in order: once one past the crash's is read, so was the crash's.
    while max([*replicas[0].windows, *replicas[1].windows, 0]) < target:
        threads = [threading.Thread(target=attempt, args=(w,)) for w in replicas]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        threading.Event().wait(INTERVAL / 2)
    first, second = (set(w.windows) for w in replicas)
    assert not first & second, "a window was read twice"
    # Every window from the first read on was read, by one of them.
    assert first | second == set(range(min(first | second), max(first | second) + 1))
    assert replicas[0].handled + replicas[1].handled == 1


def test_missed_windows_are_claimed_once_and_a_fresh_start_replays_nothing(replicas):
    first, second = replicas
    period = int(first.now() // INTERVAL)
    # A fresh scope: no earlier window, nothing to catch up.
    assert first._claim(period)
    assert first._missed(period) == []
    # Every server down for 100 periods: the next winner claims what catch_up keeps.
    later = period + 100
    assert second._claim(later)
    assert second._missed(later) == list(range(later - 10, later))
    assert first._missed(later) == []
    assert not first._claim(later - 1)
    # Older claims' variables go, but the latest one and the last minute's.
    last = later + 200
    assert first._claim(last)
    assert first._missed(last) == list(range(last - 10, last))
    prefix = f"pygeoapi_watch_{first.scope()}_"
    found = first.api.request(
        "POST",
        "/variables/filter",
        json={"variables": {"name": {"like_": f"{prefix}%"}}, "limit": 200},
    ).json()
    kept = {int(v["name"][len(prefix) :]) for v in found}
    assert kept == {later, *range(last - 10, last + 1)}


def test_watch_keys_are_checked_by_name():
    with pytest.raises(ConfigError, match=r"server\.manager\.watch\.interval"):
        load_config({"name": "x", "watch": {"interval": 0}})
    with pytest.raises(ConfigError, match=r"server\.manager\.watch\.intervall"):
        load_config({"name": "x", "watch": {"intervall": 5}})
