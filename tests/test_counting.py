"""numberMatched of the job list: counted, taken from a short page, or reused briefly."""

from __future__ import annotations

import threading
import time
import uuid

from pygeoapi_prefect.execution.timers import Timers
from pygeoapi_prefect.jobs.counting import CountCache
from pygeoapi_prefect.jobs.runs import job_tags
from pygeoapi_prefect.manager import PrefectManager


def _manager(api_url: str, process_id: str, **options: object) -> PrefectManager:
    return PrefectManager(
        {
            "name": "pygeoapi_prefect.manager.PrefectManager",
            "connection": api_url,
            "processes": {process_id: {"processor": {"name": "HelloWorld"}}},
            **options,
        }
    )


def _store(prefect_api, process_id: str, count: int) -> None:
    for _ in range(count):
        prefect_api.create_flow_run(
            flow_name=process_id,
            state={"type": "COMPLETED", "name": "Completed"},
            tags=job_tags(process_id),
        )


def test_counts_full_pages_and_short_pages_alike(prefect_server, prefect_api):
    process_id = f"count-{uuid.uuid4().hex[:8]}"
    _store(prefect_api, process_id, 5)
    manager = _manager(prefect_server.api_url, process_id)
    try:
        # A full page needs Prefect's count; a short one is its own count.
        assert manager.get_jobs(limit=2)["numberMatched"] == 5
        assert manager.get_jobs(limit=10)["numberMatched"] == 5
        assert manager.get_jobs(limit=2, offset=4)["numberMatched"] == 5
        # Past the end the page is empty, and the count comes from Prefect.
        beyond = manager.get_jobs(limit=2, offset=10)
        assert beyond["jobs"] == []
        assert beyond["numberMatched"] == 5
        # Without a cache every request counts anew.
        _store(prefect_api, process_id, 1)
        assert manager.get_jobs(limit=2)["numberMatched"] == 6
    finally:
        manager.close()


def test_count_cache_reuses_a_count_for_its_time_only(prefect_server, prefect_api):
    process_id = f"count-{uuid.uuid4().hex[:8]}"
    _store(prefect_api, process_id, 3)
    manager = _manager(prefect_server.api_url, process_id, job_count_cache_seconds=1.5)
    try:
        assert manager.get_jobs(limit=2)["numberMatched"] == 3
        _store(prefect_api, process_id, 2)
        # Within the cache time the full page's count is the remembered one...
        assert manager.get_jobs(limit=2)["numberMatched"] == 3
        # ...while the page itself is always fresh.
        assert len(manager.get_jobs(limit=10)["jobs"]) == 5
        deadline = time.monotonic() + 10
        while manager.get_jobs(limit=2)["numberMatched"] != 5:
            assert time.monotonic() < deadline, "the cached count never expired"
            time.sleep(0.2)
    finally:
        manager.close()


def test_count_cache_is_off_at_zero_and_keys_on_the_filter():
    off = CountCache(0)
    off.put("a", 1)
    assert off.get("a") is None
    cache = CountCache(60)
    first = cache.key({"tags": {"all_": ["pygeoapi"]}, "state": {"type": {"any_": ["FAILED"]}}})
    same = cache.key({"state": {"type": {"any_": ["FAILED"]}}, "tags": {"all_": ["pygeoapi"]}})
    other = cache.key({"tags": {"all_": ["pygeoapi"]}})
    assert first == same != other
    cache.put(first, 7)
    assert cache.get(same) == 7
    assert cache.get(other) is None


def test_timers_fire_once_in_order_and_not_when_cancelled():
    timers = Timers()
    fired: list[str] = []
    done = threading.Event()

    def note(name: str) -> None:
        fired.append(name)
        if name == "last":
            done.set()

    timers.call_later(0.2, lambda: note("last"))
    timers.call_later(0.05, lambda: note("first"))
    cancelled = timers.call_later(0.1, lambda: note("cancelled"))
    assert cancelled.cancel()
    assert done.wait(5)
    time.sleep(0.1)
    assert fired == ["first", "last"]
    # A call that has started cannot be cancelled any more.
    started = threading.Event()
    release = threading.Event()

    def slow() -> None:
        started.set()
        release.wait(5)

    handle = timers.call_later(0, slow)
    assert started.wait(5)
    assert not handle.cancel()
    release.set()
