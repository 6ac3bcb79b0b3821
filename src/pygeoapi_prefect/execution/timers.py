"""Delayed calls that share one thread, for per-request timers.

A sync job arms a timer that records it in Prefect if it is still running
after ``local.sync_visible_after``; almost every timer is cancelled before it
fires. :class:`threading.Timer` starts a thread per timer, which on a busy
2-core machine cost a few milliseconds of each sync request (measured in
benchmarks/README.md); here one daemon thread waits for the earliest due call.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

__all__ = ["TimerHandle", "Timers"]


def _nothing() -> None:
    return None


class TimerHandle:
    """One delayed call; :meth:`cancel` stops it unless it has started."""

    def __init__(self, call: Callable[[], None]) -> None:
        self._call = call
        self._lock = threading.Lock()
        self._state = "armed"

    def cancel(self) -> bool:
        """Stop the call; False if it has already started."""
        with self._lock:
            if self._state == "armed":
                self._state = "cancelled"
                # The heap keeps the handle until it reaches the front: not what it would call.
                self._call = _nothing
            return self._state == "cancelled"

    def _claim(self) -> bool:
        with self._lock:
            if self._state != "armed":
                return False
            self._state = "started"
            return True


class Timers:
    """Runs delayed calls from one daemon thread, started on first use.

    Example::

        timers = Timers()
        handle = timers.call_later(0.25, record_running)
        ...
        handle.cancel()

    A call that fires runs in a thread of its own, so a slow one (a Prefect
    request) never delays the next.
    """

    def __init__(self, name: str = "pygeoapi-prefect-timers") -> None:
        self._name = name
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def call_later(self, seconds: float, call: Callable[[], None]) -> TimerHandle:
        """Call ``call`` after ``seconds`` unless the returned handle is cancelled."""
        handle = TimerHandle(call)
        with self._wake:
            heapq.heappush(self._heap, (time.monotonic() + seconds, next(self._order), handle))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
            self._wake.notify()
        return handle

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    # Drop cancelled calls at the front so the heap stays small.
                    while self._heap and self._heap[0][2]._state == "cancelled":
                        heapq.heappop(self._heap)
                    due = self._heap[0][0] if self._heap else None
                    self._wake.wait(None if due is None else max(0.0, due - time.monotonic()))
                _, _, handle = heapq.heappop(self._heap)
            if handle._claim():
                threading.Thread(target=self._run, args=(handle,), daemon=True).start()

    @staticmethod
    def _run(handle: TimerHandle) -> None:
        try:
            handle._call()
        except Exception:  # noqa: BLE001 - a timer's failure must not stop the others
            logger.exception("a delayed call failed")
