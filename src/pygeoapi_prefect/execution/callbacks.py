"""OGC API - Processes callbacks: POSTs to a job's ``subscriber`` URIs.

``inProgressUri`` gets the status document when the job starts running,
``successUri`` the results document when it succeeds, ``failedUri`` the
status document when it fails. Deliveries never hold up or fail a job.

- *Where to.* Destinations are checked when the job is submitted (a 400
  naming the ``subscriber`` key) and at each delivery attempt by
  :mod:`pygeoapi_prefect.destinations`, which connects to the very address
  it checked (a DNS answer that changes in between cannot reach loopback).
  Internal means not globally reachable; ``server.manager.callbacks.allow``
  lets some in. Redirects are not followed. With ``callbacks.proxy`` every
  delivery goes through that egress proxy instead.
- *How many.* Deliveries run on a bounded pool: at most ``callbacks.workers``
  threads (started as needed), with at most ``callbacks.queue_size``
  deliveries waiting. When the queue is full a new delivery is dropped, with
  a WARNING naming the job and the key and the count dropped so far (the
  deliveries already queued keep their turn). A delivery holds its thread
  through its retries (back-off 1, 2, 4... s), each attempt bounded by
  ``callbacks.timeout``.
- *Stopping.* :meth:`CallbackPolicy.close` goes on delivering what is queued
  until a deadline (``callbacks.drain_seconds`` after the jobs have stopped,
  alongside the engine's other writes), then abandons the rest (logged, with
  the jobs) and stops retrying. The threads are a
  :class:`~pygeoapi_prefect.execution.daemons.DaemonPool`, as the engine's.
- *Logs.* A callback URL is logged as its origin (scheme, host, port) only,
  at every level: its path and query often carry a token.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import httpx

import pygeoapi_prefect.metrics as metrics
from pygeoapi_prefect.destinations import DestinationRefused, Destinations
from pygeoapi_prefect.errors import InvalidInputs
from pygeoapi_prefect.execution.daemons import DaemonPool
from pygeoapi_prefect.urls import origin

if TYPE_CHECKING:
    from pygeoapi_prefect.config import CallbacksConfig

logger = logging.getLogger(__name__)

__all__ = ["CallbackPolicy", "Delivery", "Subscriber"]

Subscriber = dict[str, str]  # successUri, inProgressUri, failedUri
_KEYS = ("successUri", "inProgressUri", "failedUri")
_ALLOW_KEY = "server.manager.callbacks.allow"
THREAD_NAME = "pygeoapi-prefect-callback"  # each thread's name: THREAD_NAME_N


class Delivery:
    """One callback delivery; :attr:`outcome` says how it ended, once :meth:`wait` is true.

    Outcomes: ``delivered`` (2xx), ``refused`` (internal destination, a
    redirect, or a 4xx other than 408/429), ``failed`` (out of attempts),
    ``dropped`` (the queue was full), ``abandoned`` (the process stopped).
    """

    def __init__(self, url: str, document: Any, job: str, key: str) -> None:
        self.url = url
        self.document = document
        self.job = job
        self.key = key
        self.outcome = "queued"
        self._done = threading.Event()

    def __repr__(self) -> str:
        return f"<Delivery {self.key} of job {self.job} to {origin(self.url)}: {self.outcome}>"

    def finish(self, outcome: str) -> None:
        """Record how the delivery ended."""
        self.outcome = outcome
        metrics.callback_delivered(outcome)
        self._done.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until it ended (True), or ``timeout`` s (False)."""
        return self._done.wait(timeout)


class CallbackPolicy:
    """Which callback destinations are allowed, and the pool that delivers.

    Args:
        allow: networks (``10.0.0.0/8``, ``127.0.0.1``) and host names that may
            be called even though they are internal.
        timeout: seconds one delivery attempt may take.
        retries: further attempts after a failed one (back-off 1, 2, 4... s).
        workers: deliveries made at once (threads, started as needed).
        queue_size: deliveries that may wait for a thread; more are dropped.
        proxy: an egress proxy every delivery goes through.

    Example::

        policy = CallbackPolicy(["10.0.0.0/8"], workers=2, queue_size=10)
        policy.check({"successUri": "https://hooks.example/cb"})  # or InvalidInputs
        delivery = policy.send(subscriber, "successUri", document, job=job_id)
        policy.close(5)
    """

    def __init__(
        self,
        allow: Iterable[str] = (),
        *,
        timeout: float = 10,
        retries: int = 4,
        workers: int = 4,
        queue_size: int = 200,
        proxy: str | None = None,
    ) -> None:
        self.destinations = Destinations(allow, allow_key=_ALLOW_KEY, proxy=proxy)
        self.timeout = timeout
        self.retries = retries
        self.workers = workers
        self.queue_size = queue_size
        #: Deliveries dropped because the queue was full (since this process started).
        self.dropped = 0
        self._reset()

    @classmethod
    def from_config(cls, config: CallbacksConfig) -> CallbackPolicy:
        """The policy of ``server.manager.callbacks``."""
        return cls(
            config.allow,
            timeout=config.timeout,
            retries=config.retries,
            workers=config.workers,
            queue_size=config.queue_size,
            proxy=config.proxy,
        )

    def _reset(self) -> None:
        # Also in a forked child: the parent's threads do not exist there.
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._pool = DaemonPool(self.workers, THREAD_NAME)
        self._queued: dict[Delivery, Future[None]] = {}  # not started yet
        self._closing = False
        self._abort = threading.Event()

    # -- destinations -----------------------------------------------------------

    def problem(self, url: str) -> str | None:
        """Why ``url`` may not be called, or ``None`` if it may (no path in the text)."""
        return self.destinations.problem(url)

    def check(self, subscriber: Subscriber | None) -> None:
        """Raise :class:`InvalidInputs` (400) naming each refused destination."""
        if not subscriber:
            return
        problems = [
            f"subscriber {key}: {problem}"
            for key in _KEYS
            if subscriber.get(key) and (problem := self.problem(subscriber[key]))
        ]
        if problems:
            raise InvalidInputs("Invalid subscriber: " + "; ".join(problems), problems=problems)

    # -- the pool ---------------------------------------------------------------

    def send(
        self, subscriber: Subscriber | None, key: str, document: Any, *, job: str = ""
    ) -> Delivery | None:
        """Queue ``document`` for the subscriber's ``key`` URI.

        Returns the delivery (to wait for), or None if there is no URI.
        A dropped delivery is returned finished, with outcome ``dropped``.
        """
        url = (subscriber or {}).get(key)
        if not url:
            return None
        delivery = Delivery(url, document, job or "(unknown)", key)
        if self._pid != os.getpid():
            self._reset()
        with self._lock:
            # At most `workers` under way and `queue_size` waiting, whatever the threads do.
            if self._closing or self._pool.pending >= self.workers + self.queue_size:
                self.dropped += 1
                dropped = self.dropped
            else:
                dropped = 0
                self._queued[delivery] = self._pool.submit(self._run, delivery)
        if dropped:
            logger.warning(
                "callback %s of job %s to %s dropped: %s (%d dropped so far; "
                "server.manager.callbacks.workers and queue_size)",
                key,
                delivery.job,
                origin(url),
                "the server is stopping" if self._closing else "the delivery queue is full",
                dropped,
            )
            delivery.finish("dropped")
        return delivery

    def _run(self, delivery: Delivery) -> None:
        with self._lock:
            self._queued.pop(delivery, None)
        try:
            self._deliver(delivery)
        except Exception:  # noqa: BLE001 - one delivery must not fail another
            logger.exception("callback %s of job %s failed", delivery.key, delivery.job)
            delivery.finish("failed")

    def _deliver(self, delivery: Delivery) -> None:
        shown = origin(delivery.url)
        what = f"callback {delivery.key} of job {delivery.job} to {shown}"
        for attempt in range(self.retries + 1):
            try:
                status = self.destinations.post_json(
                    delivery.url, delivery.document, timeout=self.timeout
                )
            except DestinationRefused as exc:
                logger.warning("%s not sent: %s", what, exc.reason)
                delivery.finish("refused")
                return
            except httpx.HTTPError as exc:
                # httpx's messages name no path, but be sure.
                text = str(exc).replace(delivery.url, shown)
                reason = f"failed ({exc.__class__.__name__}: {text})"
            except ValueError as exc:  # NaN or the like: not JSON
                logger.warning("%s not sent: the document is not JSON (%s)", what, exc)
                delivery.finish("failed")
                return
            else:
                if status < 300:
                    logger.debug("%s delivered (%d)", what, status)
                    delivery.finish("delivered")
                    return
                if status < 400 or (status < 500 and status not in (408, 429)):
                    kind = "a redirect, not followed" if status < 400 else "refusal"
                    logger.warning("%s answered %d (%s)", what, status, kind)
                    delivery.finish("refused")
                    return
                reason = f"answered {status}"
            if attempt < self.retries:
                delay = 2.0**attempt
                logger.info("%s %s; retrying in %.0f s", what, reason, delay)
                if self._abort.wait(delay):
                    logger.warning("%s abandoned: the server is stopping", what)
                    delivery.finish("abandoned")
                    return
            else:
                logger.warning("%s %s; giving up after %d attempts", what, reason, attempt + 1)
        delivery.finish("failed")

    def close(self, timeout: float) -> None:
        """Deliver what is queued for at most ``timeout`` s, then abandon the rest."""
        self.close_by(time.monotonic() + timeout)

    def close_by(self, deadline: float) -> None:
        """Deliver what is queued until ``deadline`` (monotonic), then abandon the rest.

        Returns by then; an attempt under way then may go on (in a daemon
        thread) for up to ``callbacks.timeout`` s, without retries.
        """
        if self._pid != os.getpid():
            self._reset()
            return
        with self._lock:
            self._closing = True
        left = self._pool.close(deadline)
        self._abort.set()
        with self._lock:
            # Cancelled by the pool's close: they never started.
            abandoned = [d for d, call in self._queued.items() if call.cancelled()]
            self._queued.clear()
        busy = left - len(abandoned)
        for delivery in abandoned:
            delivery.finish("abandoned")
        if abandoned or busy:
            logger.warning(
                "stopping: %d queued callback(s) abandoned (jobs %s), %d under way left",
                len(abandoned),
                _some(sorted({d.job for d in abandoned})),
                busy,
            )
        self.destinations.close()


def _some(names: list[str], shown: int = 20) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more if names else "-"
