"""Job logs: what a job logs and prints, captured and sent to Prefect as its flow run's logs.

Wherever a job runs, its lines become Prefect logs of its flow run (seen in
the Prefect UI under the run, and served at ``GET /jobs/{jobId}/logs``):

- a *sync* job runs in the request's thread: only that thread's records and
  writes are captured (:func:`capturing` with ``this_thread_only``), kept in
  memory, and sent once the job has its id (:func:`ship_in_background`);
- a *local async* job runs alone in a worker process, and a *deployed* job in
  its flow run's process on a Prefect worker: everything the process logs or
  prints while the job runs is the job's (threads it starts included), and a
  shipper thread sends the lines every second, the rest at the end within a
  bounded time.

What is captured: ``logging`` records at ``logs.level`` or above that reach
the root logger, and the lines written to ``sys.stdout``/``sys.stderr``
(still written there too). Not captured: Prefect's own loggers (``prefect.*``:
inside a flow run Prefect sends those itself), the HTTP clients' and this
module's (they would log the shipping), and output written to the file
descriptors directly (a subprocess's). Past ``logs.max_lines`` or
``logs.max_bytes`` lines are counted instead, and a last line says how many
were dropped. Sending never fails or holds up a job: a batch Prefect does not
take in time is logged here and dropped.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from pygeoapi_prefect.errors import PrefectManagerError

if TYPE_CHECKING:
    from pygeoapi_prefect.config import ManagerConfig
    from pygeoapi_prefect.execution.backlog import Backlog
    from pygeoapi_prefect.prefect.api import PrefectAPI

logger = logging.getLogger(__name__)

__all__ = [
    "JobLog",
    "LogLimits",
    "capturing",
    "job_logging",
    "limits_from",
    "limits_from_dict",
    "read_job_logs",
    "ship",
    "ship_in_background",
    "shipping",
]

#: Loggers whose records are never a job's: Prefect ships its own inside flow
#: runs, and the HTTP clients' and ours would log the shipping itself.
_EXCLUDED = ("prefect", "httpx", "httpcore", "pygeoapi_prefect.prefect", __name__)
#: Seconds between two batches of a running job.
SHIP_SECONDS = 1.0
#: Lines and bytes of one ``POST /logs/`` at most.
_BATCH_LINES = 200
_BATCH_BYTES = 512 * 1024
#: Prefect serves at most this many log lines per call.
MAX_PAGE = 200


@dataclass(frozen=True)
class LogLimits:
    """A job's log settings (``server.manager.logs``); plain data, so it crosses processes."""

    enabled: bool = True
    level: int = logging.INFO
    max_lines: int = 1000
    max_bytes: int = 1024 * 1024
    #: Seconds the last batch of a job may take to reach Prefect.
    flush_seconds: float = 5.0


def limits_from(config: ManagerConfig) -> LogLimits:
    """The log limits of a manager config."""
    logs = config.logs
    return LogLimits(
        enabled=logs.enabled,
        level=logging.getLevelNamesMapping()[logs.level],
        max_lines=logs.max_lines,
        max_bytes=logs.max_bytes,
        flush_seconds=config.api_timeout,
    )


def limits_from_dict(settings: dict[str, Any] | None, flush_seconds: float = 5.0) -> LogLimits:
    """The log limits of a ``server.manager.logs`` block as plain data (a deployed flow's)."""
    settings = settings or {}
    defaults = LogLimits()
    level = str(settings.get("level", "INFO")).upper()
    return LogLimits(
        enabled=bool(settings.get("enabled", True)),
        level=logging.getLevelNamesMapping().get(level, logging.INFO),
        max_lines=int(settings.get("max_lines", defaults.max_lines)),
        max_bytes=int(settings.get("max_bytes", defaults.max_bytes)),
        flush_seconds=flush_seconds,
    )


def _timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


class JobLog:
    """The lines of one job, within its volume limit, waiting to be sent.

    Args:
        limits: the job's limits.
        job_id: the job (flow run) the lines belong to; a sync job gets it later.

    """

    def __init__(self, limits: LogLimits, job_id: str | None = None) -> None:
        self.limits = limits
        self.job_id = job_id
        self._lock = threading.Lock()
        self._pending: list[dict[str, Any]] = []
        self._partial: dict[str, str] = {}
        self._last = 0.0
        self.kept_lines = 0
        self.kept_bytes = 0
        self.dropped_lines = 0
        self.dropped_bytes = 0
        self.closed = False

    def add(self, level: int, name: str, message: str, created: float | None = None) -> None:
        """Keep one line, or count it if the job's limit is reached."""
        size = len(message.encode("utf-8", "replace"))
        with self._lock:
            if self.closed:
                return
            room = self.limits.max_bytes - self.kept_bytes
            if self.kept_lines >= self.limits.max_lines or room <= 0:
                self.dropped_lines += 1
                self.dropped_bytes += size
                return
            if size > room:
                # One huge line: keep its start, count the rest.
                message = message.encode("utf-8", "replace")[:room].decode("utf-8", "ignore")
                self.dropped_bytes += size - room
                size = room
            self.kept_lines += 1
            self.kept_bytes += size
            # Strictly increasing: Prefect sorts a run's lines by timestamp.
            stamp = max(created or time.time(), self._last + 1e-6)
            self._last = stamp
            self._pending.append(
                {"name": name, "level": level, "message": message, "timestamp": stamp}
            )

    def write(self, stream: str, text: str) -> None:
        """Text written to ``stream`` (stdout, stderr): kept line by line."""
        level = logging.INFO if stream == "stdout" else logging.WARNING
        with self._lock:
            text = self._partial.pop(stream, "") + text
            *lines, rest = text.split("\n")
            if rest:
                self._partial[stream] = rest
        for line in lines:
            self.add(level, stream, line.rstrip("\r"))

    def close(self) -> None:
        """Keep unfinished lines, say what was dropped, and take no more."""
        with self._lock:
            partial, self._partial = self._partial, {}
        for stream, rest in partial.items():
            self.write(stream, rest + "\n")
        with self._lock:
            if self.closed:
                return
            self.closed = True
            if self.dropped_lines:
                stamp = max(time.time(), self._last + 1e-6)
                self._pending.append(
                    {
                        "name": "pygeoapi_prefect",
                        "level": logging.WARNING,
                        "message": (
                            f"{self.dropped_lines} more log lines ({self.dropped_bytes} bytes) "
                            f"were dropped: over this job's limit of {self.limits.max_lines} "
                            f"lines or {self.limits.max_bytes} bytes "
                            "(server.manager.logs.max_lines, server.manager.logs.max_bytes)"
                        ),
                        "timestamp": stamp,
                    }
                )

    def take(self) -> list[dict[str, Any]]:
        """The lines waiting, as Prefect log bodies (they are no longer waiting)."""
        with self._lock:
            pending, self._pending = self._pending, []
        job_id = self.job_id
        return [
            {**line, "timestamp": _timestamp(line["timestamp"]), "flow_run_id": job_id}
            for line in pending
        ]

    def put_back(self, lines: list[dict[str, Any]]) -> None:
        """Lines that could not be sent yet go first next time."""
        with self._lock:
            restored = [
                {**line, "timestamp": datetime.fromisoformat(line["timestamp"]).timestamp()}
                for line in lines
            ]
            self._pending[:0] = restored


# -- capture ----------------------------------------------------------------

_lock = threading.Lock()
#: The capture of each thread running a sync job.
_by_thread: dict[int, JobLog] = {}
#: The capture of the whole process (a worker process's job, a flow run).
_whole_process: list[JobLog] = []
#: Threads that must never be captured (the shippers).
_quiet_threads: set[int] = set()


def _current() -> JobLog | None:
    ident = threading.get_ident()
    if ident in _quiet_threads:
        return None
    found = _by_thread.get(ident)
    if found is None and _whole_process:
        found = _whole_process[-1]
    return found


class _Handler(logging.Handler):
    """On the root logger: a record goes to the capture of the thread that made it."""

    def emit(self, record: logging.LogRecord) -> None:
        log = _current()
        if log is None or record.levelno < log.limits.level:
            return
        name = record.name
        if any(name == excluded or name.startswith(excluded + ".") for excluded in _EXCLUDED):
            return
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
        except Exception:  # noqa: BLE001 - a bad record must not break the job
            message = str(record.msg)
        log.add(record.levelno, name, message, record.created)


class _Tee(io.TextIOBase):
    """Stands in for ``sys.stdout``/``sys.stderr``: writes go through, and to the capture."""

    def __init__(self, stream: TextIO, name: str) -> None:
        self._stream = stream
        self._name = name

    def write(self, text: str) -> int:
        written = self._stream.write(text)
        log = _current()
        if log is not None and text:
            log.write(self._name, text)
        return written

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        # encoding, fileno, isatty, buffer...: the real stream's.
        return getattr(self._stream, name)


_HANDLER = _Handler()


class _AsBefore(logging.Filter):
    """On the host's root handlers while a job let the root level down: what they showed before.

    A job's INFO lines (its HTTP requests among them) go to Prefect, not to
    the server's console at a level its operator did not set; and a process
    whose root handler is Prefect's (a flow process loaded Prefect) need not
    render each of them (rich's console, copy-on-write pages of each job).
    """

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= self.level:
            return True
        # A logger with a level of its own was not governed by the root's.
        logger_ = logging.getLogger(record.name)
        while logger_.parent is not None:
            if logger_.level != logging.NOTSET:
                return True
            logger_ = logger_.parent
        return False


def _install() -> None:
    # Once per process; again if someone replaced the streams since.
    root = logging.getLogger()
    if _HANDLER not in root.handlers:
        root.addHandler(_HANDLER)
    if not isinstance(sys.stdout, _Tee) and sys.stdout is not None:
        sys.stdout = _Tee(sys.stdout, "stdout")
    if not isinstance(sys.stderr, _Tee) and sys.stderr is not None:
        sys.stderr = _Tee(sys.stderr, "stderr")


@contextlib.contextmanager
def capturing(log: JobLog, *, this_thread_only: bool) -> Iterator[JobLog]:
    """Capture what is logged and printed inside into ``log`` (closed at the end).

    ``this_thread_only``: a sync job in a request thread, beside other requests;
    otherwise the whole process is the job's, and its root logger is let down
    to the job's level for the time of the job (the root's other handlers
    still show only what they showed before, :class:`_AsBefore`).
    """
    if not log.limits.enabled:
        yield log
        return
    root = logging.getLogger()
    level = root.level
    as_before = _AsBefore(level)
    filtered: list[logging.Handler] = []
    with _lock:
        _install()
        if this_thread_only:
            _by_thread[threading.get_ident()] = log
        else:
            _whole_process.append(log)
            if root.level > log.limits.level or root.level == logging.NOTSET:
                if root.level > log.limits.level:
                    filtered = [h for h in root.handlers if h is not _HANDLER]
                    for handler in filtered:
                        handler.addFilter(as_before)
                root.setLevel(log.limits.level)
    try:
        yield log
    finally:
        with _lock:
            if this_thread_only:
                _by_thread.pop(threading.get_ident(), None)
            else:
                _whole_process.remove(log)
                root.setLevel(level)
                for handler in filtered:
                    handler.removeFilter(as_before)
        log.close()


# -- shipping ---------------------------------------------------------------


def _batches(lines: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    size = 0
    for line in lines:
        length = len(line["message"]) + 200
        if batch and (len(batch) >= _BATCH_LINES or size + length > _BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(line)
        size += length
    if batch:
        yield batch


def ship(api: PrefectAPI, log: JobLog, *, budget: float | None = None) -> bool:
    """Send the lines waiting; False (lines kept for later) if Prefect did not take them."""
    if not log.job_id:
        return False
    lines = log.take()
    end = None if budget is None else time.monotonic() + budget
    sent = 0
    try:
        for batch in _batches(lines):
            left = None if end is None else max(0.05, end - time.monotonic())
            api.create_logs(batch, budget=left)
            sent += len(batch)
    except PrefectManagerError as exc:
        log.put_back(lines[sent:])
        logger.warning("log lines of job %s not sent yet: %s", log.job_id, exc)
        return False
    return True


def _ship_every(api: PrefectAPI, log: JobLog, done: threading.Event) -> threading.Thread:
    # A thread sending the lines waiting every SHIP_SECONDS, until ``done``.
    def loop() -> None:
        _quiet_threads.add(threading.get_ident())
        try:
            while not done.wait(SHIP_SECONDS):
                ship(api, log, budget=log.limits.flush_seconds)
        finally:
            _quiet_threads.discard(threading.get_ident())

    thread = threading.Thread(target=loop, name="pygeoapi-prefect-logs", daemon=True)
    thread.start()
    return thread


@contextlib.contextmanager
def shipping_meanwhile(api: PrefectAPI, log: JobLog) -> Iterator[JobLog]:
    """Send ``log``'s lines every :data:`SHIP_SECONDS` while inside (a recorded sync job).

    What is left when it ends is sent by whoever ends the job
    (:func:`ship_in_background`).
    """
    if not log.limits.enabled or not log.job_id:
        yield log
        return
    done = threading.Event()
    _ship_every(api, log, done)
    try:
        yield log
    finally:
        done.set()


@contextlib.contextmanager
def shipping(api: PrefectAPI | str | None, log: JobLog) -> Iterator[JobLog]:
    """Send ``log``'s lines every :data:`SHIP_SECONDS` while inside, the rest at the end.

    ``api``: the client of the job's process (shared with its heartbeats and
    progress), or the API URL (a client of its own, closed at the end). The
    end waits for Prefect at most ``log.limits.flush_seconds``; lines it
    does not take by then are dropped (and logged here).
    """
    if not api or not log.limits.enabled:
        yield log
        return
    from pygeoapi_prefect.prefect.api import borrowed

    with borrowed(api, timeout=max(1.0, log.limits.flush_seconds)) as client:
        done = threading.Event()
        thread = _ship_every(client, log, done)
        try:
            yield log
        finally:
            done.set()
            thread.join(log.limits.flush_seconds)
            log.close()
            if not ship(client, log, budget=log.limits.flush_seconds):
                left = len(log.take())
                if left:
                    logger.warning("%d log lines of job %s were not sent", left, log.job_id)


def ship_in_background(
    backlog: Backlog,
    submit: Callable[[Callable[[], None]], Any],
    api: PrefectAPI,
    log: JobLog,
    job_id: str,
) -> None:
    """Send a finished sync job's lines off the request path, or here if ``backlog`` is full.

    ``submit``: the executor's that sends them (not the UI extras' threads).
    """
    log.job_id = job_id
    log.close()
    if not log.kept_lines and not log.dropped_lines:
        return  # nothing to say: no write at all

    def send() -> None:
        for pause in (0.0, 1.0, 4.0):
            time.sleep(pause)
            if ship(api, log):
                return
        logger.warning("log lines of sync job %s were not sent", job_id)

    try:
        queued = backlog.offer(
            send, f"the log lines of job {job_id} (sent by the request)", submit=submit
        )
    except RuntimeError:
        # The engine is stopping: its background pool takes nothing more.
        logger.warning("log lines of job %s not sent: the server is stopping", job_id)
        return
    if not queued:
        # Too many writes wait already: this request sends them, within the job's bound.
        if not ship(api, log, budget=log.limits.flush_seconds):
            logger.warning("log lines of sync job %s were not sent", job_id)


# -- reading ----------------------------------------------------------------


def read_job_logs(api: PrefectAPI, job_id: str, *, limit: int, offset: int) -> list[dict[str, Any]]:
    """Up to ``limit`` log lines of a job from ``offset``, oldest first.

    Each line: ``timestamp``, ``level`` (name), ``logger``, ``message``.
    """
    lines: list[dict[str, Any]] = []
    while len(lines) < limit:
        size = min(MAX_PAGE, limit - len(lines))
        page = api.read_logs(job_id, limit=size, offset=offset + len(lines))
        lines.extend(page)
        if len(page) < size:
            break
    return [
        {
            "timestamp": line["timestamp"],
            "level": logging.getLevelName(int(line.get("level") or 0)),
            "logger": line.get("name") or "",
            "message": line.get("message") or "",
        }
        for line in lines
    ]


@contextlib.contextmanager
def job_logging(api: PrefectAPI | str | None, job_id: str, limits: LogLimits) -> Iterator[JobLog]:
    """A job that has its process to itself: capture everything, ship as it goes.

    ``api``: the client of the job's process, or the API URL (see :func:`shipping`).
    """
    log = JobLog(limits, job_id)
    with shipping(api, log), capturing(log, this_thread_only=False):
        yield log
