"""The local pool: each async job in a process of its own, forked from a template.

A Python thread cannot be stopped, so async jobs run in separate processes.
Starting a Python process per job costs seconds of imports and ~100 MiB;
forking the threaded web server is unsafe. So the pool has one
*template* process, forked from the server before it served (``seed.py``)
or else spawned, which loads the config's processors once and then only
forks: each job runs in a fresh
child of the template, sharing the template's memory copy-on-write (a few
MiB of its own), and is killed with its process group on dismiss. The pool
grows with the work (one driving thread per running job, up to
``max_workers``, and per process up to its limit) and shrinks when idle
(a job's process ends with its job; a driving thread after ``idle_seconds``
without work). The pool knows nothing about Prefect: the manager gives it
the hooks that record each step.

Where a job starts and ends in the pool: :meth:`_Slot._run` (the
``started`` and ``finished`` hooks), :func:`_job_main` in the job's process.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from multiprocessing import reduction
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pygeoapi_prefect.metrics as metrics
from pygeoapi_prefect.execution import relay
from pygeoapi_prefect.execution import seed as seeds
from pygeoapi_prefect.execution.execute import (
    JobRequest,
    Outcome,
    load_processor,
    run_job,
    store_outcome,
)
from pygeoapi_prefect.execution.heartbeat import beating
from pygeoapi_prefect.execution.joblogs import job_logging
from pygeoapi_prefect.execution.slots import Slot, SlotFiles
from pygeoapi_prefect.jobs.results import ResultStore
from pygeoapi_prefect.prefect.api import ClientOptions, PrefectAPI, client_options, preset
from pygeoapi_prefect.progress import labels_reporter, reporting_to

logger = logging.getLogger(__name__)

__all__ = ["INTERRUPTED", "JobHooks", "LocalRunner"]

_CTX = multiprocessing.get_context("spawn")
_POLL_SECONDS = 0.05
_READY = "ready"
_FORK = "fork"
#: How long the template process may take to import what it needs.
_START_SECONDS = 120.0
#: How long a killed job's process may take to disappear.
_GONE_SECONDS = 2.0
#: How often a process whose jobs wait looks for a slot freed by another process.
_SLOT_POLL_SECONDS = 0.02
#: A folder, set by benchmarks/job_memory.py only: each job process traces
#: what Python allocates after its fork and writes it there (``<pid>.json``)
#: when its processor returns. Tracing costs memory and time: never in production.
TRACE_ENV = "PYGEOAPI_PREFECT_TRACE_JOBS"


@dataclass(frozen=True)
class JobHooks:
    """What the pool calls as a job moves on (all from the pool's threads).

    Attributes:
        started: called before the job runs (its claim); returning False skips it.
        running: optional, ``running(request, announce, record)``: called as the
            job starts (``announce``: its events and callbacks) and, if it was
            not recorded Running then, once more after ``visible_after`` (a job
            that ends sooner is never recorded Running: one Prefect write
            fewer); returning False kills it (it was dismissed meanwhile).
        finished: called with the outcome once the job has run.
        cancelled_elsewhere: polled while the job runs; True kills it.
        killed: called after a job's process was killed on dismissal.
        cancelled_among: optional, the same check for all running jobs at once
            (one Prefect read for the whole pool): the ids of those to kill.
        reported: optional, sends a write the job's process relayed while it
            ran (``relay.py``: heartbeats, progress, log lines), in order and
            before ``finished``; without it the job's process sends them itself.

    """

    started: Callable[[JobRequest], bool]
    finished: Callable[[JobRequest, Outcome], None]
    cancelled_elsewhere: Callable[[JobRequest], bool]
    killed: Callable[[JobRequest], None]
    cancelled_among: Callable[[list[JobRequest]], set[str]] | None = None
    running: Callable[[JobRequest, bool, bool], bool] | None = None
    reported: Callable[[JobRequest, tuple[Any, ...]], None] | None = None


#: The final message of a job whose pygeoapi instance stopped while it ran.
INTERRUPTED = "Interrupted: the pygeoapi instance running the job was stopped; submit the job again"


def _record_alone(api: PrefectAPI | None, request: JobRequest, outcome: Outcome) -> None:
    """Record a job's end from its own process, whose pygeoapi is gone.

    The pool thread that would have done it died with its server (SIGKILL):
    the job's output is in the store, and only its state is left to set
    (retried through an outage, as every step of an accepted job).
    """
    if api is None:
        return
    from pygeoapi_prefect.errors import PrefectManagerError
    from pygeoapi_prefect.execution.persist import persist
    from pygeoapi_prefect.jobs.runs import DEFAULT_MIMETYPE, MIMETYPE_LABEL
    from pygeoapi_prefect.prefect.states import WITHOUT_SERVER, state

    # Named so that the job watcher publishes and counts this end: no server did.
    if outcome.ok:
        final = state("COMPLETED", "Job complete", name=f"Completed{WITHOUT_SERVER}")
    else:
        final = state("FAILED", outcome.message, name=f"Failed{WITHOUT_SERVER}")
    try:
        if outcome.ok and outcome.mimetype != DEFAULT_MIMETYPE:
            persist(api.update_labels, request.job_id, {MIMETYPE_LABEL: outcome.mimetype})
        persist(api.set_state, request.job_id, final)
        logger.info("job %s ended after its pygeoapi instance stopped", request.job_id)
    except PrefectManagerError as exc:
        logger.error("could not record the end of job %s: %s", request.job_id, exc)


def _trace_start() -> set[str] | None:
    # Right after the fork: the modules the template had, and tracing from here.
    if not os.environ.get(TRACE_ENV):
        return None
    import tracemalloc

    tracemalloc.start()
    return set(sys.modules)


def _trace_dump(before: set[str] | None) -> None:
    # While the job's clients and threads still live: what was allocated since the fork.
    if before is None:
        return
    import json
    import tracemalloc
    from pathlib import Path

    stats = tracemalloc.take_snapshot().statistics("lineno")
    report = {
        "traced": sum(stat.size for stat in stats),
        "top": [[str(stat.traceback[0]), stat.size, stat.count] for stat in stats[:20]],
        "imported": sorted(set(sys.modules) - before),
        "handlers": [repr(handler) for handler in logging.getLogger().handlers],
        "prefect_in_template": "prefect" in before,
    }
    (Path(os.environ[TRACE_ENV]) / f"{os.getpid()}.json").write_text(json.dumps(report))


@dataclass
class _Preloaded:
    store: ResultStore
    #: The one Prefect client of every job process (heartbeats, progress, log
    #: shipping), built here: it relays them to the server while the job's
    #: pipe is open (relay.py); a child alone makes only its own connection pool.
    api: PrefectAPI | None
    heartbeat_seconds: float | None
    processors: dict[str, Any]


def _job_main(conn: Connection, preloaded: _Preloaded) -> None:
    # In a child of the template: run one job, send its outcome, end.
    traced = _trace_start()
    try:
        message: tuple[JobRequest, bool] | None = conn.recv()
    except EOFError:
        return
    if message is None:
        return
    request, relayed = message
    api = preloaded.api
    send = relay.pipe_sender(conn)
    if relayed and isinstance(api, relay.RelayedAPI):
        api.relay_through(send)
    try:
        processor = preloaded.processors.get(request.process_id)
        if processor is None:
            processor = load_processor(request.process_conf)
        processor.set_job_id(request.job_id)
        reporter = labels_reporter(api, request.job_id, events=request.events) if api else None
        with (
            beating(api, request.job_id, preloaded.heartbeat_seconds),
            reporting_to(reporter),
            job_logging(api, request.job_id, request.logs),
        ):
            outcome = run_job(
                processor,
                request.inputs,
                request.requested_outputs,
                job_label=f"job {request.job_id} of process {request.process_id}",
                store=preloaded.store,
                job_id=functools.partial(str, request.result_key),
                references=request.references,
                process_conf=request.process_conf,
            )
            _trace_dump(traced)
        if outcome.ok:
            store_outcome(
                preloaded.store,
                request.result_key,
                outcome,
                request.response,
                request.requested_outputs,
            )
        # The output is in the store; only the summary crosses the pipe.
        outcome.outputs = None
    except Exception as exc:  # noqa: BLE001 - reported to the pool, never lost
        logger.exception("failed to run job %s", request.job_id)
        outcome = Outcome(ok=False, message=f"{exc.__class__.__name__}: {exc}")
    if not send(outcome):
        # Our pygeoapi was killed while the job ran: finish it ourselves.
        _record_alone(api, request, outcome)


def _template_main(
    conn: Connection,
    store_url: str,
    storage_options: dict[str, Any],
    api_url: str | None,
    heartbeat_seconds: float | None = None,
    process_confs: Mapping[str, dict[str, Any]] | None = None,
    client: ClientOptions | None = None,
) -> None:
    # The template: import once, then fork a child per job, on request.
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the server, which stops us
    seeds.name_process(seeds.NAME)
    # The parent starts us as a daemon (so it never waits for us at exit),
    # but a processor may start processes of its own, which multiprocessing
    # refuses to a daemon: inside this process and its children, we are not one.
    multiprocessing.current_process().daemon = False
    import pygeoapi.plugin  # noqa: F401 - the slow import, done before we say ready

    if client is not None:
        # The jobs' heartbeats and progress reports never import Prefect for its settings.
        preset(client)
    api = None
    if api_url:
        # Heartbeats, progress and log shipping may write at once, as when
        # each had a client of its own.
        api = relay.RelayedAPI(api_url, write_concurrency=3)
        api.prepare()

    store = ResultStore(store_url, storage_options)
    store.fs  # noqa: B018 - the filesystem's imports, once
    processors: dict[str, Any] = {}
    preloaded = _Preloaded(store, api, heartbeat_seconds, processors)
    # Children end on their own and are reaped by the kernel; the pool
    # watches them through their pipes and by pid.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    # What was imported stays untouched by the garbage collector, so the
    # children's copy-on-write pages stay shared.
    gc.collect()
    gc.freeze()
    conn.send(_READY)
    # The processors are loaded while no job waits for a fork: the first
    # jobs need not wait for all of them (a job forked before its processor
    # was loaded here loads it itself).
    to_load = list((process_confs or {}).items())
    while True:
        while to_load and not conn.poll(0):
            process_id, conf = to_load.pop(0)
            try:
                processors[process_id] = load_processor(conf)
            except Exception:  # noqa: BLE001 - loaded again (and failing visibly) in its job
                logger.debug("could not preload the processor of %s", process_id, exc_info=True)
            gc.freeze()
        try:
            message = conn.recv()
        except EOFError:
            return
        if not isinstance(message, tuple) or message[0] != _FORK:
            return
        fd = reduction.recv_handle(conn)
        # The job's slots (locked files): held by the job's process while it
        # lives, so a slot outlives a killed server only as long as its job.
        held = [reduction.recv_handle(conn) for _ in range(message[1])]
        try:
            pid = os.fork()
        except OSError as exc:
            for own in (fd, *held):
                os.close(own)
            conn.send(f"could not fork a job process: {exc}")
            continue
        if pid == 0:
            code = 0
            try:
                conn.close()
                # Our own process group, so that a dismiss kills whatever the job started too.
                os.setsid()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                seeds.name_process(seeds.JOB_NAME)
                _job_main(Connection(fd), preloaded)
            except BaseException:  # noqa: BLE001 - the pool sees the pipe close
                code = 1
            finally:
                logging.shutdown()
                os._exit(code)
        for own in (fd, *held):
            os.close(own)
        conn.send(pid)


def _stat(path: str | Path) -> list[bytes] | None:
    # The fields of /proc/<pid>/stat after the command name (state first,
    # then parent, process group...), or None if the process is gone.
    try:
        return Path(path).read_bytes().rsplit(b")", 1)[1].split()
    except OSError:
        return None


def _alive(pid: int) -> bool:
    fields = _stat(f"/proc/{pid}/stat")
    return fields is not None and fields[0] != b"Z"


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return
    # The group's other processes (what the job started) die on their own
    # time, not with their leader: wait for them too.
    deadline = time.monotonic() + _GONE_SECONDS
    while (_alive(pid) or _group_alive(pid)) and time.monotonic() < deadline:
        time.sleep(0.002)


def _group_alive(pgid: int) -> bool:
    # Whether a process of the group still runs (zombies, waiting for
    # whoever reaps them, do not count).
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    for path in Path("/proc").glob("[0-9]*/stat"):
        fields = _stat(path)
        if fields is not None and fields[0] != b"Z" and int(fields[2]) == pgid:
            return True
    return False


class _Template:
    """The template process and the pipe the pool asks it to fork on."""

    def __init__(self, pool: LocalRunner) -> None:
        self.pool = pool
        self.lock = threading.Lock()
        self.process: Any = None
        self.conn: Connection | None = None
        self.ready = False
        self.start()

    def start(self) -> None:
        args = (
            self.pool.store.url,
            self.pool.store.storage_options,
            self.pool.api_url,
            self.pool.heartbeat_seconds,
            self.pool.process_confs,
            client_options() if self.pool.api_url else None,
        )
        # The server's own copy, forked before it served (seed.py), if it has one.
        seed = seeds.take()
        if seed is not None:
            self.process, self.conn, self.ready = seed, seed.grow(_template_main, *args), False
            return
        parent, child = _CTX.Pipe()
        process = _CTX.Process(
            target=_template_main,
            args=(child, *args),
            name="pygeoapi-prefect-template",
            daemon=True,
        )
        process.start()
        child.close()
        self.process, self.conn, self.ready = process, parent, False

    def wait_ready(self) -> None:
        """Wait for the template to have imported everything (so a job's run time is its own)."""
        with self.lock:
            self._wait_ready()

    def _wait_ready(self) -> None:
        if self.ready:
            return
        assert self.conn is not None
        if not self.conn.poll(_START_SECONDS) or self.conn.recv() != _READY:
            raise RuntimeError(f"the template process did not start within {_START_SECONDS:.0f} s")
        self.ready = True

    def fork(self, held: list[Slot]) -> tuple[int, Connection]:
        """A new job process, holding the ``held`` slots too, and the pool's end of its pipe."""
        ours, theirs = socket.socketpair()
        try:
            with self.lock:
                if self.process is None or not self.process.is_alive():
                    if self.pool.stopping:
                        raise RuntimeError("the pool is stopping")
                    logger.warning("the template process had died: starting a new one")
                    self.start()
                self._wait_ready()
                assert self.conn is not None
                fds = [slot.fd for slot in held if slot.fd is not None]
                self.conn.send((_FORK, len(fds)))
                reduction.send_handle(self.conn, theirs.fileno(), self.process.pid)
                for fd in fds:
                    reduction.send_handle(self.conn, fd, self.process.pid)
                answer = self.conn.recv()
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        if not isinstance(answer, int):
            ours.close()
            raise RuntimeError(str(answer))
        return answer, Connection(ours.detach())

    def stop(self) -> None:
        # A thread may hold the lock while the template still imports: then
        # the template is killed without a word (that thread sees its pipe close).
        locked = self.lock.acquire(timeout=0.5)
        try:
            process, conn = self.process, self.conn
            if conn is not None and locked:
                try:
                    conn.send(None)
                except OSError:
                    pass
            if process is not None:
                process.join(2 if locked else 0)
                if process.is_alive():
                    process.kill()
                    process.join(2)
            if conn is not None:
                try:
                    conn.close()
                except OSError:
                    pass
            self.process = self.conn = None
        finally:
            if locked:
                self.lock.release()


class _Slot:
    """One driving thread: it takes a job, forks its process, and watches it."""

    def __init__(self, pool: LocalRunner, index: int) -> None:
        self.pool = pool
        self.current: JobRequest | None = None
        self.pid: int | None = None
        self.conn: Connection | None = None
        #: Whether ``current`` was claimed and started here (not only taken off the queue).
        self.started_job = False
        #: Whether the end of ``current`` is being recorded (by this thread or by
        #: a shutdown, under the pool's lock: never both).
        self.ended = False
        #: The id of the job to kill; checked against the job that runs, so a
        #: late dismiss can never hit the next job.
        self.kill_for: str | None = None
        #: The metrics of the job in hand.
        self.watch = metrics.watch("")
        #: The server-wide slots the job in hand holds (with ``local.pool_scope: server``).
        self.held: list[Slot] = []
        self.thread = threading.Thread(
            target=self._loop, name=f"pygeoapi-prefect-job-{index}", daemon=True
        )

    def kill(self) -> None:
        pid, conn = self.pid, self.conn
        if pid is not None:
            _kill_group(pid)
        if conn is not None:
            try:
                conn.close()
            except OSError:
                pass  # already closed by a concurrent shutdown
        self.pid = self.conn = None

    def _kill_requested(self, request: JobRequest) -> bool:
        return self.kill_for == request.job_id

    def _loop(self) -> None:
        pool = self.pool
        while True:
            request = pool.next_job(self)
            if request is None:
                return
            try:
                self._run(request)
            except Exception as exc:  # noqa: BLE001 - one job must not stop the pool
                if not self.started_job and not pool.taking:
                    # Stopping before it started: the job never ran here,
                    # and stays Pending for another process to take.
                    logger.info("job %s left for another process", request.job_id)
                else:
                    logger.exception("local runner failed to handle job %s", request.job_id)
                    self._report_failure(request, exc)
            finally:
                self.watch.end()
                self.watch.dequeued()
                if self.pid is not None and not pool.stopping:
                    self.kill()
                pool.job_done(self, request)

    def _report_failure(self, request: JobRequest, exc: Exception) -> None:
        try:
            self.pool.hooks.finished(
                request, Outcome(ok=False, message=f"The job could not be run: {exc}")
            )
        except Exception:  # noqa: BLE001 - already logged above; nothing more to do
            logger.exception("could not record the failure of job %s", request.job_id)

    def _run(self, request: JobRequest) -> None:
        started = self._start(request)
        if started is None:
            return
        outcome = self._outcome(request, *started)
        if outcome is None:
            return
        if self._kill_requested(request):
            self._killed(request)
            return
        with self.pool.lock:
            if self.ended:
                return  # a shutdown records it as interrupted
            self.ended = True
        self.pool.hooks.finished(request, outcome)

    def _start(self, request: JobRequest) -> tuple[Connection, bool, float] | None:
        # Fork the job's process, claim the job, hand it over. Returns the
        # job's pipe, whether it is recorded Running yet and when it must be;
        # None if it does not run here (its process is gone then).
        pool = self.pool
        hooks = pool.hooks
        pool.template.wait_ready()
        if not pool.taking:
            return None  # stopping while the template started: left Pending for others
        # Forked before the job is Running, so that the request reaches its
        # process right after: a server killed in between leaves a Running
        # job that nothing runs (only the heartbeat automation would end it).
        pid, conn = pool.template.fork(self.held)
        self.pid, self.conn = pid, conn
        if not hooks.started(request):
            conn.send(None)  # the process ends without running anything
            self.kill()
            return None
        self.started_job = True
        self.watch.start()
        if self._kill_requested(request):
            self._killed(request)
            return None
        # Recorded Running before it runs if someone waits for that (an
        # inProgressUri callback) or visible_after is 0; else only if it still
        # runs after visible_after.
        recorded = pool.visible_after <= 0 or bool((request.subscriber or {}).get("inProgressUri"))
        shown_at = time.monotonic() + pool.visible_after
        if not self._shown(request, announce=True, record=recorded):
            conn.send(None)
            self.kill()
            return None
        conn.send((request, hooks.reported is not None))
        return conn, recorded, shown_at

    def _outcome(
        self, request: JobRequest, conn: Connection, recorded: bool, shown_at: float
    ) -> Outcome | None:
        # What the job's process sends last, its reports relayed before it;
        # None if the end is not for this thread to record (killed, dismissed,
        # refused Running, or the pool stopping).
        pool = self.pool
        hooks = pool.hooks
        while True:
            if self._kill_requested(request):
                self._killed(request)
                return None
            if not recorded and time.monotonic() >= shown_at:
                recorded = True
                if not self._shown(request, announce=False, record=True):
                    self.kill()
                    return None
            try:
                if conn.poll(_POLL_SECONDS):
                    message = conn.recv()
                    if hooks.reported is not None and relay.is_relayed(message):
                        hooks.reported(request, message)
                        continue
                    outcome: Outcome = message
                    return outcome
            except (EOFError, OSError):
                if pool.stopping:
                    return None  # shutdown() records the job
                if self._kill_requested(request):
                    self._killed(request)
                    return None
                self.kill()
                return Outcome(
                    ok=False,
                    message="The worker process running the job died (killed, or out of memory)",
                )

    def _shown(self, request: JobRequest, *, announce: bool, record: bool) -> bool:
        running = self.pool.hooks.running
        return running is None or running(request, announce, record)

    def _killed(self, request: JobRequest) -> None:
        self.kill()
        logger.info("killed the process of dismissed job %s", request.job_id)
        self.pool.hooks.killed(request)


class LocalRunner:
    """Runs async jobs, each in a process forked from a pre-imported template.

    Example::

        runner = LocalRunner(store, hooks, max_workers=32, process_limits={"buffer": 2})
        runner.submit(JobRequest(job_id, "hello-world", conf, {"name": "x"}))
        runner.dismiss(job_id)   # kills it if it runs, drops it if queued

    Args:
        store: where the jobs write results.
        hooks: the manager's bookkeeping callbacks.
        max_workers: how many jobs run at once.
        cancel_check_seconds: how often the running jobs are checked for a
            cancellation made elsewhere (one check for all of them).
        api_url: the Prefect API the jobs report progress to.
        heartbeat_seconds: how often a running job sends a heartbeat (None: never).
        process_limits: at most this many jobs of a process run at once.
        process_confs: processes whose processors the template loads at start.
        idle_seconds: how long a driving thread without work waits before it ends.
        slots: the directory of the slot files shared by the processes of one
            server: ``max_workers`` and ``process_limits`` count the jobs of all
            of them (None: of this process only).
        visible_after: seconds a job runs before it is recorded Running (the
            ``running`` hook); a job that ends sooner never is (0: at its start).

    """

    def __init__(
        self,
        store: ResultStore,
        hooks: JobHooks,
        *,
        max_workers: int = 32,
        cancel_check_seconds: float = 1.0,
        api_url: str | None = None,
        heartbeat_seconds: float | None = None,
        process_limits: Mapping[str, int] | None = None,
        process_confs: Mapping[str, dict[str, Any]] | None = None,
        idle_seconds: float = 30.0,
        slots: Path | None = None,
        visible_after: float = 0.0,
    ) -> None:
        store.fs  # noqa: B018 - resolve a block-defined store once, for the template
        self.store = store
        self.api_url = api_url
        self.heartbeat_seconds = heartbeat_seconds
        self.max_workers = max_workers
        self.process_limits = dict(process_limits or {})
        self.process_confs = dict(process_confs or {})
        self.idle_seconds = idle_seconds
        self.visible_after = visible_after
        self.stopping = False
        #: False once the process stops: queued jobs are left for others.
        self.taking = True
        self.hooks = hooks
        self.cancel_check_seconds = cancel_check_seconds
        self.lock = threading.Lock()
        self._work = threading.Condition(self.lock)
        self._queue: deque[JobRequest] = deque()
        #: Jobs queued or running here, from submit() until their thread is done.
        self.held: set[str] = set()
        #: Every driving thread, and those waiting for work.
        self.slots: list[_Slot] = []
        self._idle = 0
        self._running: dict[str, int] = {}
        self._count = 0
        #: The metrics of the queued jobs (time in the queue).
        self.watches: dict[str, metrics.JobWatch] = {}
        #: The server's slot files (None: the limits are this process's own).
        self.shared: SlotFiles | None = None
        self._limit_files: dict[str, SlotFiles] = {}
        if slots is not None:
            self.shared = SlotFiles(slots, "job", max_workers)
            for process_id, limit in self.process_limits.items():
                name = hashlib.sha256(process_id.encode()).hexdigest()[:16]
                self._limit_files[process_id] = SlotFiles(slots, f"process-{name}", limit)
        #: The one driving thread that polls for slots freed by other processes.
        self._seeker: _Slot | None = None
        self.template = _Template(self)
        self._checker = threading.Thread(
            target=self._check_cancellations, name="pygeoapi-prefect-cancel-check", daemon=True
        )
        self._checker.start()
        # The pool's capacity: max_workers jobs at once (their processes come and go).
        metrics.pool_size(max_workers)

    # -- the queue ---------------------------------------------------------

    def _runnable(self, request: JobRequest) -> bool:
        limit = self.process_limits.get(request.process_id)
        return limit is None or self._running.get(request.process_id, 0) < limit

    def _take(self, slot: _Slot) -> JobRequest | None:
        # The first queued job whose process is under its limit (under the
        # lock), with the server's slots it needs held by ``slot``.
        if not self._queue:
            return None
        job_slot = None
        if self.shared is not None:
            job_slot = self.shared.take()
            if job_slot is None:
                return None  # the server runs max_workers jobs already
        for request in self._queue:
            if not self._runnable(request):
                continue
            held = [job_slot] if job_slot is not None else []
            files = self._limit_files.get(request.process_id)
            if files is not None:
                limit_slot = files.take()
                if limit_slot is None:
                    continue  # at its limit on the server
                held.append(limit_slot)
            self._queue.remove(request)
            slot.held = held
            return request
        if job_slot is not None:
            job_slot.release()
        return None

    def _busy(self) -> int:
        return sum(1 for slot in self.slots if slot.current is not None)

    def next_job(self, slot: _Slot) -> JobRequest | None:
        """The next job for ``slot``'s thread; None: the thread ends (idle, or stopping)."""
        with self._work:
            self._idle += 1
            try:
                deadline = time.monotonic() + self.idle_seconds
                while True:
                    if not self.taking:
                        break
                    request = self._take(slot)
                    if request is not None:
                        if self._seeker is slot:
                            self._seeker = None
                            self._work.notify_all()  # another thread looks for the next slot
                        slot.current = request
                        queued = self.watches.pop(request.job_id, None)
                        slot.watch = queued or metrics.watch(request.process_id)
                        metrics.pool_busy(1)
                        self._running[request.process_id] = (
                            self._running.get(request.process_id, 0) + 1
                        )
                        return request
                    if self._queue:
                        # Jobs wait (for a slot, or their process's limit): no
                        # thread ends idle while they do.
                        deadline = time.monotonic() + self.idle_seconds
                        if self.shared is not None and self._seeker in (None, slot):
                            # Slots freed by other processes are seen by polling
                            # (ours wake us at once), by one thread of the pool.
                            self._seeker = slot
                            self._work.wait(_SLOT_POLL_SECONDS)
                            continue
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._work.wait(left)
                self.slots.remove(slot)
                return None
            finally:
                self._idle -= 1
                if self._seeker is slot:
                    self._seeker = None
                    self._work.notify_all()

    def job_done(self, slot: _Slot, request: JobRequest) -> None:
        """``slot`` is through with ``request`` (run, skipped or failed)."""
        with self._work:
            self.held.discard(request.job_id)
            self._running[request.process_id] -= 1
            slot.current = None
            slot.kill_for = None
            slot.started_job = False
            slot.ended = False
            slot.pid = slot.conn = None
            for held in slot.held:
                held.release()
            slot.held = []
            metrics.pool_busy(-1)
            # A job held back by its process's limit may go now.
            self._work.notify_all()

    def _grow(self) -> None:
        # Under the lock: a thread more if more jobs wait than threads do, and the cap allows.
        if len(self._queue) > self._idle and len(self.slots) < self.max_workers and self.taking:
            self._count += 1
            slot = _Slot(self, self._count)
            self.slots.append(slot)
            slot.thread.start()

    def submit(self, request: JobRequest) -> bool:
        """Queue a job; it starts as soon as it may (``max_workers``, its process's limit).

        False (and nothing queued) if the job is queued or running here already.
        """
        with self._work:
            if request.job_id in self.held:
                return False
            self.held.add(request.job_id)
            self.watches[request.job_id] = metrics.watch(request.process_id, queued=True)
            self._queue.append(request)
            self._grow()
            self._work.notify()
        return True

    # -- dismiss and cancellation -----------------------------------------

    def dismiss(self, job_id: str, *, timeout: float = 5.0) -> bool:
        """Stop a job of this pool: kill it if running, drop it if queued.

        Returns once nothing of the job runs any more (its process group is
        killed from this thread, so at once; or after ``timeout``); True if
        the job was running or queued here.
        """
        with self._work:
            target = next(
                (s for s in self.slots if s.current is not None and s.current.job_id == job_id),
                None,
            )
            if target is None:
                queued = next((r for r in self._queue if r.job_id == job_id), None)
                if queued is not None:
                    self._queue.remove(queued)
                    self.held.discard(job_id)
                    watch = self.watches.pop(job_id, None)
                    if watch is not None:
                        watch.dequeued()
                    metrics.job_finished(queued.process_id, "dismissed")
                return queued is not None
            target.kill_for = job_id
            pid = target.pid
        if pid is not None:
            _kill_group(pid)  # the slot's thread sees its pipe close and records nothing
        else:
            # Not forked yet (being claimed): its thread kills it before it runs.
            deadline = time.monotonic() + timeout
            while target.current is not None and target.current.job_id == job_id:
                if time.monotonic() > deadline:
                    break
                if target.pid is not None:
                    _kill_group(target.pid)
                    break
                time.sleep(0.005)
        return True

    def _check_cancellations(self) -> None:
        # One thread checks every running job for a cancellation made elsewhere.
        while not self.stopping:
            time.sleep(self.cancel_check_seconds)
            with self.lock:
                running = [s.current for s in self.slots if s.current is not None and s.pid]
            if not running or self.stopping:
                continue
            try:
                if self.hooks.cancelled_among is not None:
                    cancelled = self.hooks.cancelled_among(running)
                else:
                    cancelled = {r.job_id for r in running if self.hooks.cancelled_elsewhere(r)}
            except Exception:  # noqa: BLE001 - a failed check is retried next time
                logger.warning("could not check the running jobs for cancellation")
                continue
            for job_id in cancelled:
                self.dismiss(job_id)

    def holds(self, job_id: str) -> bool:
        """Whether the job is queued or running in this pool."""
        with self.lock:
            return job_id in self.held

    def claimed(self, job_id: str) -> bool:
        """Whether the job was claimed here and runs here (maybe not recorded Running yet)."""
        with self.lock:
            return any(
                s.started_job and s.current is not None and s.current.job_id == job_id
                for s in self.slots
            )

    def running_count(self) -> int:
        """How many jobs run here now."""
        with self.lock:
            return self._busy()

    def wait_ready(self) -> None:
        """Wait until the template process is ready to fork jobs."""
        self.template.wait_ready()

    def join(self, timeout: float) -> None:
        """Wait (up to ``timeout``) for every driving thread to end."""
        deadline = time.monotonic() + timeout
        with self.lock:
            slots = list(self.slots)
        for slot in slots:
            slot.thread.join(max(0.0, deadline - time.monotonic()))

    # -- stopping ----------------------------------------------------------

    def stop_taking(self) -> None:
        """Start no further job (safe in a signal handler: sets a flag only)."""
        self.taking = False

    def shutdown(self, grace: float = 0.0) -> None:
        """Stop the pool.

        Queued jobs are not run here (they stay Pending in Prefect, and
        another process takes them over); running jobs get ``grace`` seconds
        to finish, then are killed and recorded as failed with
        :data:`INTERRUPTED`.
        """
        with self._work:
            self.taking = False
            for request in self._queue:
                self.held.discard(request.job_id)
            self._queue.clear()
            for watch in self.watches.values():
                watch.dequeued()  # left for the other processes
            self.watches.clear()
            self._work.notify_all()
        # Every job taken off the queue gets the grace: one being claimed or
        # forked right now would otherwise be Running with nobody to run it
        # once this process exits.
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            with self.lock:
                if not any(s.current is not None for s in self.slots):
                    break
            time.sleep(_POLL_SECONDS)
        with self.lock:
            self.stopping = True
            # Only started jobs are interrupted; one not yet claimed is left
            # for another process to take.
            # One whose end its thread records already is left to it.
            busy = [
                s for s in self.slots if s.current is not None and s.started_job and not s.ended
            ]
            for slot in busy:
                slot.ended = True
            requests = [s.current for s in busy if s.current is not None]
        for slot in busy:
            slot.kill()
        self.template.stop()
        metrics.pool_size(-self.max_workers)
        for request in requests:
            try:
                self.hooks.finished(request, Outcome(ok=False, message=INTERRUPTED))
            except Exception:  # noqa: BLE001 - the next start's zombie check remains
                logger.exception("could not record the interruption of job %s", request.job_id)
