"""Prometheus metrics of the job service: the definitions, the hooks that record them, the scrape.

Every hook is a no-op until :func:`enable` ran in this process (an engine
whose config has ``server.manager.metrics.enabled`` does it when built), so
the local pool's worker processes and the flows on Prefect workers, which
build no engine, count nothing: each job is counted once, by the server
process that accepted it, ran it or recorded its end. ``prometheus_client``
is imported only then.

Several server processes (gunicorn or uvicorn workers) share their numbers
through ``prometheus_client``'s multiprocess mode: with
``PROMETHEUS_MULTIPROC_DIR`` set, each process writes its values to files
there and a scrape, answered by any process, adds them up
(docs/operating.md, "Metrics"). Gauges are ``livesum``: the files of a
process that died are dropped, by gunicorn's ``child_exit`` hook
(:func:`child_exit`) or, for servers without one, at the next scrape (a
process id that no longer exists on this host).

No label takes an unbounded value: ``process`` is a process id of the
config (or a published deployment), ``outcome``, ``mode`` and ``error`` come
from fixed sets, and a Prefect API path is reduced to its route
(:func:`route_of`: ids and names become ``{id}`` and ``{name}``).

Example::

    metrics.job_submitted("hello-world", "async")
    with metrics.prefect_call("POST", "/flow_runs/"):
        ...
    content_type, body = metrics.scrape(accept_header)
"""

from __future__ import annotations

import functools
import glob
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from pygeoapi_prefect.errors import JobNotFound, PrefectRequestFailed, PrefectUnavailable

logger = logging.getLogger(__name__)

__all__ = [
    "MULTIPROC_ENV",
    "OUTCOMES",
    "PREFIX",
    "JobWatch",
    "background_pending",
    "background_skipped",
    "callback_delivered",
    "child_exit",
    "enable",
    "enabled",
    "failure",
    "finishing",
    "job_finished",
    "job_submitted",
    "multiprocess_dir",
    "pool_busy",
    "pool_size",
    "prefect_call",
    "prepare_multiprocess_dir",
    "route_of",
    "scrape",
    "watch",
]

#: Every metric's name starts with this.
PREFIX = "pygeoapi_prefect_"
#: prometheus_client's own switch to multiprocess mode.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: How a job ended (the OGC status of its end).
OUTCOMES = ("successful", "failed", "dismissed")
#: How callback deliveries end (``execution.callbacks.Delivery.finish``):
#: accepted (2xx); refused (a 4xx, a redirect, or a destination that is not
#: allowed at delivery time); failed after every retry; dropped (the queue
#: was full); abandoned (the server stopped first).
CALLBACK_OUTCOMES = ("delivered", "refused", "failed", "dropped", "abandoned")

#: Jobs last from milliseconds (a sync hello-world) to hours.
RUN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
#: A local job waits for a free worker process: from nothing to minutes under load.
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
#: A Prefect API call takes ~5-50 ms; its bound is ``api_timeout`` (5 s), twice with a write's wait.
API_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

#: Words of the Prefect REST routes we call; any other path segment is an id or a name.
_ROUTE_WORDS = frozenset(
    {
        "admin",
        "artifacts",
        "automations",
        "bulk_delete",
        "count",
        "create_flow_run",
        "deployments",
        "events",
        "filter",
        "flow_runs",
        "flows",
        "health",
        "labels",
        "logs",
        "name",
        "next",
        "paginate",
        "schedules",
        "set_state",
        "task_runs",
        "variables",
        "version",
        "work_pools",
        "workers",
    }
)
_UUID = re.compile(r"^[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}$")
#: Deeper paths are cut (none of ours is deeper): the set of routes stays finite.
_MAX_SEGMENTS = 5


class _Metrics:
    """The metric objects of this process (built once by :func:`enable`)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        #: Ours only: not prometheus_client's default registry, which other
        #: libraries (Prefect's clients) fill with metrics of their own.
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.submitted = Counter(
            PREFIX + "jobs_submitted",
            "Jobs accepted for execution, by process and execution mode (sync, async)",
            ["process", "mode"],
            registry=registry,
        )
        self.finished = Counter(
            PREFIX + "jobs_finished",
            "Jobs ended, as recorded by this service, by process and outcome "
            "(successful, failed, dismissed)",
            ["process", "outcome"],
            registry=registry,
        )
        self.run_seconds = Histogram(
            PREFIX + "job_run_seconds",
            "Seconds a job ran in this service (sync in the request, async in a local "
            "worker process), by process",
            ["process"],
            buckets=RUN_BUCKETS,
            registry=registry,
        )
        self.wait_seconds = Histogram(
            PREFIX + "job_queue_wait_seconds",
            "Seconds a local async job waited in its server process's queue for a free "
            "worker process, by process",
            ["process"],
            buckets=WAIT_BUCKETS,
            registry=registry,
        )
        self.queued = Gauge(
            PREFIX + "jobs_queued",
            "Local async jobs waiting in a server process's queue now, by process",
            ["process"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.running = Gauge(
            PREFIX + "jobs_running",
            "Jobs running in this service now (sync and local async), by process",
            ["process"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.pool_workers = Gauge(
            PREFIX + "pool_workers",
            "Worker processes of the local pools (server.manager.local.max_workers "
            "for each server process that started its pool)",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.pool_busy = Gauge(
            PREFIX + "pool_busy_workers",
            "Worker processes of the local pools busy with a job now",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.background_pending = Gauge(
            PREFIX + "background_pending",
            "Prefect writes off the request path (run names, summary artifacts, sync "
            "jobs' log lines) waiting or under way now (at most "
            "server.manager.background_backlog per server process)",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.background_skipped = Counter(
            PREFIX + "background_skipped",
            "Prefect writes off the request path refused because the backlog was full "
            "(run names and summaries skipped; log lines sent by the request instead)",
            registry=registry,
        )
        self.api_seconds = Histogram(
            PREFIX + "prefect_api_request_seconds",
            "Seconds a Prefect API call took, as the caller waited for it (the wait for "
            "a write slot and the retries of a 503 included), by method and route",
            ["method", "route"],
            buckets=API_BUCKETS,
            registry=registry,
        )
        self.api_errors = Counter(
            PREFIX + "prefect_api_errors",
            "Prefect API calls that failed, by method, route and error (unavailable: "
            "unreachable, 502/503 or too busy; else the HTTP status Prefect answered)",
            ["method", "route", "error"],
            registry=registry,
        )
        self.callbacks = Counter(
            PREFIX + "callbacks",
            "Callback deliveries (subscriber URIs), by outcome (delivered, refused, "
            "failed, dropped, abandoned)",
            ["outcome"],
            registry=registry,
        )


_metrics: _Metrics | None = None
#: Why metrics could not be enabled here (the multiprocess folder), if they could not.
_failure: str | None = None
_lock = threading.Lock()
_warned = False


def _quiet[F: Callable[..., Any]](function: F) -> F:
    """Never let a metric fail what it measures (a full disk under the multiprocess folder)."""

    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        global _warned
        try:
            return function(*args, **kwargs)
        except Exception:  # noqa: BLE001 - a job step must go on; logged once
            if not _warned:
                _warned = True
                logger.exception("a metric could not be recorded (further failures not logged)")
            return None

    return guarded  # type: ignore[return-value]


def multiprocess_dir() -> str | None:
    """The folder of multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``), if set."""
    return os.environ.get(MULTIPROC_ENV) or None


def enable() -> bool:
    """Start recording in this process (idempotent); False if metrics cannot work here.

    They cannot when the multiprocess folder is not usable (logged once,
    naming it): jobs go on, unmeasured, and ``/metrics`` answers 503.
    """
    global _metrics, _failure
    if _metrics is not None:
        return True
    with _lock:
        if _metrics is not None:
            return True
        if _failure is not None:
            return False
        folder = multiprocess_dir()
        try:
            if folder is not None:
                from prometheus_client import values

                if not getattr(values.ValueClass, "_multiprocess", False):
                    # prometheus_client picks its value class when first imported
                    # (Prefect imports it early, maybe before `serve` set the
                    # folder): values made from here on must be the files'.
                    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
                os.makedirs(folder, exist_ok=True)
            _metrics = _Metrics()
        except OSError as exc:
            _failure = f"{MULTIPROC_ENV}={folder}: {exc}"
            logger.error("metrics are off in this process: %s", _failure)
            return False
        logger.debug("metrics enabled (multiprocess folder: %s)", folder)
        return True


def enabled() -> bool:
    """Whether this process records metrics."""
    return _metrics is not None


# -- jobs ------------------------------------------------------------------------


@_quiet
def job_submitted(process_id: str, mode: str) -> None:
    """A job was accepted (``mode``: ``sync`` or ``async``)."""
    if _metrics is not None:
        _metrics.submitted.labels(process_id, mode).inc()


@_quiet
def job_finished(process_id: str, outcome: str) -> None:
    """A job's end was recorded here (``outcome``: one of :data:`OUTCOMES`; others ignored)."""
    if _metrics is not None and outcome in OUTCOMES:
        _metrics.finished.labels(process_id, outcome).inc()


@contextmanager
def finishing(process_id: str, ok: bool) -> Iterator[None]:
    """Count the end of a job whose record the block writes.

    ``ok`` says how it ran; a block that raises :class:`JobNotFound` (the
    job was dismissed meanwhile) counts it dismissed, any other error failed.
    """
    try:
        yield
    except JobNotFound:
        job_finished(process_id, "dismissed")
        raise
    except Exception:
        job_finished(process_id, "failed")
        raise
    job_finished(process_id, "successful" if ok else "failed")


class JobWatch:
    """One job's time in a queue and running: the gauges and histograms it moves.

    Made by :func:`watch`; also a context manager around the run (sync jobs).
    """

    __slots__ = ("_queued", "_started", "process_id")

    def __init__(self, process_id: str, queued: bool) -> None:
        self.process_id = process_id
        self._queued: float | None = None
        self._started: float | None = None
        if queued and _metrics is not None:
            self._enqueued()

    @_quiet
    def _enqueued(self) -> None:
        assert _metrics is not None
        _metrics.queued.labels(self.process_id).inc()
        self._queued = time.monotonic()

    @_quiet
    def dequeued(self) -> None:
        """The job left the queue without running (dismissed, left for another process)."""
        if self._queued is not None and _metrics is not None:
            _metrics.queued.labels(self.process_id).dec()
        self._queued = None

    @_quiet
    def start(self) -> None:
        """The job starts running now."""
        if _metrics is None:
            return
        if self._queued is not None:
            _metrics.wait_seconds.labels(self.process_id).observe(time.monotonic() - self._queued)
            self.dequeued()
        self._started = time.monotonic()
        _metrics.running.labels(self.process_id).inc()

    @_quiet
    def end(self) -> None:
        """The job stopped running (whatever its outcome); a no-op if it never started."""
        if self._started is None or _metrics is None:
            return
        _metrics.run_seconds.labels(self.process_id).observe(time.monotonic() - self._started)
        _metrics.running.labels(self.process_id).dec()
        self._started = None

    def __enter__(self) -> JobWatch:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.end()


def watch(process_id: str, *, queued: bool = False) -> JobWatch:
    """A :class:`JobWatch` of a job; ``queued``: it enters a queue now."""
    return JobWatch(process_id, queued)


@_quiet
def pool_size(change: int) -> None:
    """A local pool of ``change`` workers started (positive) or stopped (negative)."""
    if _metrics is not None:
        _metrics.pool_workers.inc(change)


@_quiet
def pool_busy(change: int) -> None:
    """A pool worker took a job (+1) or is free again (-1)."""
    if _metrics is not None:
        _metrics.pool_busy.inc(change)


@_quiet
def background_pending(change: int) -> None:
    """A write off the request path was queued (+1) or is done (-1)."""
    if _metrics is not None:
        _metrics.background_pending.inc(change)


@_quiet
def background_skipped() -> None:
    """A write off the request path was refused: the backlog was full."""
    if _metrics is not None:
        _metrics.background_skipped.inc()


# -- Prefect API and callbacks ----------------------------------------------------


def route_of(path: str) -> str:
    """The route of a Prefect API path, e.g. ``/flow_runs/{id}/labels``."""
    path = path.split("?", 1)[0]
    kept = []
    for segment in path.strip("/").split("/")[:_MAX_SEGMENTS]:
        if segment in _ROUTE_WORDS:
            kept.append(segment)
        elif segment:
            kept.append("{id}" if _UUID.match(segment) else "{name}")
    route = "/" + "/".join(kept)
    return route + "/" if path.endswith("/") and kept else route


@contextmanager
def prefect_call(method: str, path: str) -> Iterator[None]:
    """Time one Prefect API call, and count it if it fails."""
    if _metrics is None:
        yield
        return
    started = time.monotonic()
    error: str | None = None
    try:
        yield
    except PrefectUnavailable:
        error = "unavailable"
        raise
    except PrefectRequestFailed as exc:
        error = str(exc.status) if exc.status else "invalid"
        raise
    finally:
        _record_call(method, path, time.monotonic() - started, error)


@_quiet
def _record_call(method: str, path: str, seconds: float, error: str | None) -> None:
    assert _metrics is not None
    route = route_of(path)
    _metrics.api_seconds.labels(method, route).observe(seconds)
    if error is not None:
        _metrics.api_errors.labels(method, route, error).inc()


@_quiet
def callback_delivered(outcome: str) -> None:
    """A callback delivery ended (``outcome``: one of :data:`CALLBACK_OUTCOMES`)."""
    if _metrics is not None and outcome in CALLBACK_OUTCOMES:
        _metrics.callbacks.labels(outcome).inc()


# -- several processes -----------------------------------------------------------


@_quiet
def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's live gauges: gunicorn's ``child_exit`` hook.

    In a gunicorn config file: ``from pygeoapi_prefect.metrics import child_exit``.
    """
    folder = multiprocess_dir()
    if folder is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid, folder)  # type: ignore[no-untyped-call]


def prepare_multiprocess_dir(folder: str) -> None:
    """Make the multiprocess folder, empty of earlier runs' files; before the server starts.

    Values left by processes of an earlier run would be added to this run's.
    """
    os.makedirs(folder, exist_ok=True)
    for path in glob.glob(os.path.join(folder, "*.db")):
        os.remove(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _drop_dead(folder: str) -> None:
    # For servers without a child_exit hook (uvicorn): the live gauges of a
    # process id that no longer exists are the files of a dead worker.
    from prometheus_client import multiprocess

    pids = set()
    for path in glob.glob(os.path.join(folder, "gauge_live*_*.db")):
        digits = os.path.basename(path).rsplit("_", 1)[-1].removesuffix(".db")
        if digits.isdigit():
            pids.add(int(digits))
    for pid in pids:
        if pid != os.getpid() and not _alive(pid):
            multiprocess.mark_process_dead(pid, folder)  # type: ignore[no-untyped-call]


class _Ours:
    """A collector of another collector's metrics whose names are ours."""

    def __init__(self, collector: Any) -> None:
        self.collector = collector

    def collect(self) -> Iterator[Any]:
        for metric in self.collector.collect():
            if metric.name.startswith(PREFIX):
                yield metric


def failure() -> str | None:
    """Why metrics are off in this process although enabled, if they are."""
    return _failure


def scrape(accept: str | None) -> tuple[str, bytes] | None:
    """The metrics, in the format ``accept`` asks for (Prometheus text by default).

    Returns (media type, body), or None if metrics cannot work here
    (:func:`failure` says why). With several processes, every process's
    values added up (multiprocess mode); else this process's.
    """
    if not enable():
        return None
    assert _metrics is not None
    from prometheus_client import CollectorRegistry
    from prometheus_client.exposition import choose_encoder

    folder = multiprocess_dir()
    if folder is None:
        registry = _metrics.registry
    else:
        from prometheus_client.multiprocess import MultiProcessCollector

        _drop_dead(folder)
        registry = CollectorRegistry()
        registry.register(_Ours(MultiProcessCollector(None, path=folder)))  # type: ignore[no-untyped-call]
    encoder, content_type = choose_encoder(accept or "")
    return content_type, encoder(registry)
