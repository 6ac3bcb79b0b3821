"""The threads of the writes off the request path (execution/daemons.py), and retries that stop."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from pygeoapi_prefect.config import load_config
from pygeoapi_prefect.errors import PrefectUnavailable
from pygeoapi_prefect.execution.daemons import DaemonPool
from pygeoapi_prefect.execution.engine import Engine
from pygeoapi_prefect.execution.persist import Retries


def test_calls_run_on_daemon_threads_up_to_the_bound():
    pool = DaemonPool(3, "test-pool")
    gate = threading.Event()
    seen: list[threading.Thread] = []

    def call(n: int) -> int:
        seen.append(threading.current_thread())
        gate.wait(10)
        return n * 2

    futures = [pool.submit(call, n) for n in range(6)]
    gate.set()
    assert [f.result(10) for f in futures] == [0, 2, 4, 6, 8, 10]
    assert len({t.name for t in seen}) <= 3
    assert all(t.daemon and t.name.startswith("test-pool_") for t in seen)
    assert pool.pending == 0
    assert pool.close(time.monotonic() + 1) == 0


def test_an_error_reaches_the_future():
    pool = DaemonPool(1, "test-pool")

    def fail() -> None:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        pool.submit(fail).result(10)


def test_close_waits_until_its_deadline_then_cancels_what_never_started():
    pool = DaemonPool(1, "test-pool")
    release = threading.Event()
    running = pool.submit(release.wait, 30)
    queued = [pool.submit(time.sleep, 0) for _ in range(2)]
    started = time.monotonic()
    assert pool.close(time.monotonic() + 0.3) == 3  # one running, two queued
    assert 0.3 <= time.monotonic() - started < 5
    assert all(f.cancelled() for f in queued)
    assert not running.done()  # left to its daemon thread
    with pytest.raises(RuntimeError, match="closed"):
        pool.submit(time.sleep, 0)
    release.set()
    assert running.result(10) is True


def test_the_threads_end_once_the_pool_is_closed_and_idle():
    pool = DaemonPool(2, "test-pool-ends")
    release = threading.Event()
    running = pool.submit(release.wait, 30)
    pool.submit(time.sleep, 0).result(10)

    def threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name.startswith("test-pool-ends_")]

    assert len(threads()) == 2
    assert pool.close(time.monotonic() + 0.1) == 1
    release.set()  # the running call ends, then its thread
    assert running.result(10) is True
    for thread in threads():
        thread.join(10)
    assert threads() == []


def test_close_returns_once_the_queue_is_done():
    pool = DaemonPool(2, "test-pool")
    futures = [pool.submit(time.sleep, 0.1) for _ in range(4)]
    started = time.monotonic()
    assert pool.close(time.monotonic() + 30) == 0
    assert time.monotonic() - started < 10
    assert all(f.done() and not f.cancelled() for f in futures)


def test_retries_end_once_the_process_stops():
    retries = Retries()
    attempts: list[float] = []

    def unreachable() -> None:
        attempts.append(time.monotonic())
        raise PrefectUnavailable("The Prefect API at http://127.0.0.1:1/api is unreachable")

    stopper = threading.Timer(1.0, retries.stop_within, args=(0.5,))
    stopper.start()
    started = time.monotonic()
    with pytest.raises(PrefectUnavailable, match="server.manager.drain_seconds"):
        retries.persist(unreachable)
    stopper.join()
    # Retried (0.5 s, then 1 s apart) until the stop, then given up: not 10 minutes.
    assert len(attempts) >= 2
    assert time.monotonic() - started < 10


def test_retries_stop_within_keeps_the_earliest_end():
    retries = Retries()
    retries.stop_within(1)
    first = retries.stop_by
    retries.stop_within(100)
    assert retries.stop_by == first
    retries.stop_within(0)
    assert retries.stop_by < first


def test_a_write_deferred_after_the_engine_closed_is_dropped_with_an_error(caplog, tmp_path):
    engine = Engine(
        load_config(
            {"name": "pygeoapi_prefect.manager.PrefectManager", "results": {"url": str(tmp_path)}}
        )
    )
    done = threading.Event()
    engine.record_later(done.set)
    assert done.wait(10)
    engine.close()
    later = threading.Event()
    with caplog.at_level(logging.ERROR, logger="pygeoapi_prefect.execution.engine"):
        engine.record_later(later.set)  # a request that ended after the close: it answers
    assert "is dropped: this process has stopped" in caplog.text
    assert not later.wait(0.5)
