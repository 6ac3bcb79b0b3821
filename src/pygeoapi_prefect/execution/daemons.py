"""Threads for Prefect writes off the request path, that a stopping process drains within a bound.

A :class:`concurrent.futures.ThreadPoolExecutor` is joined when the
interpreter exits, before :mod:`atexit` runs, and only once its threads
have run everything queued. A server stopped during a Prefect outage so
waited on the retries of its deferred writes (up to 10 minutes each) until
gunicorn killed it after its graceful timeout (30 s): its jobs' processes
were never stopped in order, and a process manager reading the exit status
saw a crash.

A :class:`DaemonPool` runs calls on daemon threads, so exit does not wait
for them. :meth:`DaemonPool.close` (from the engine's close, at exit) lets
them work until a deadline, cancels what never started and says how much
is left.

Example::

    pool = DaemonPool(2, "pygeoapi-prefect-recorder")
    future = pool.submit(write, job_id)
    ...
    left = pool.close(time.monotonic() + 5)  # calls abandoned, 0 if all done
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

__all__ = ["DaemonPool"]

_Call = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class DaemonPool:
    """Up to ``workers`` daemon threads, started as calls come, named ``prefix_N``."""

    def __init__(self, workers: int, prefix: str) -> None:
        self.workers = workers
        self._prefix = prefix
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)  # a call is queued
        self._done = threading.Condition(self._lock)  # a call has ended
        self._queue: collections.deque[_Call] = collections.deque()
        self._threads = 0
        self._idle = 0
        self._busy = 0
        self._closed = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Run ``fn(*args, **kwargs)`` on a thread of the pool.

        Raises:
            RuntimeError: the pool is closed (as an executor that is shut down).

        """
        future: Future[Any] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self._prefix}: closed, no new work")
            self._queue.append((future, fn, args, kwargs))
            if self._idle:
                self._idle -= 1  # that one is taken now, for the next call to count on
                self._ready.notify()
            elif self._threads < self.workers:
                name = f"{self._prefix}_{self._threads}"
                self._threads += 1
                threading.Thread(target=self._work, name=name, daemon=True).start()
        return future

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._queue:
                    if self._closed:
                        self._threads -= 1  # nothing more will come: end
                        return
                    self._idle += 1  # the caller that wakes this thread counts it off
                    self._ready.wait()
                future, fn, args, kwargs = self._queue.popleft()
                self._busy += 1
            failure: BaseException | None = None
            result: Any = None
            started = future.set_running_or_notify_cancel()
            if started:
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:  # noqa: BLE001 - the future carries it
                    failure = exc
            with self._lock:
                self._busy -= 1
                self._done.notify_all()
            # Resolved once counted off: whoever holds the result sees no call pending.
            if not started:
                continue
            if failure is not None:
                future.set_exception(failure)
            else:
                future.set_result(result)

    @property
    def pending(self) -> int:
        """Calls queued or running."""
        with self._lock:
            return len(self._queue) + self._busy

    def close(self, deadline: float) -> int:
        """Take no new call; let the queued ones run until ``deadline`` (monotonic).

        Returns:
            How many calls did not end by then: the queued ones are cancelled,
            the running ones go on in their daemon threads (which then end)
            until they return or the process exits.

        """
        with self._lock:
            self._closed = True
            self._ready.notify_all()  # the idle threads end
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._done.wait(left)
            abandoned = len(self._queue) + self._busy
            for future, *_ in self._queue:
                future.cancel()
            self._queue.clear()
        return abandoned
