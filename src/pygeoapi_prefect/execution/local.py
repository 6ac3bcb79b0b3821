"""A pool of worker processes for async jobs, each of which can be killed.

A Python thread cannot be stopped, so async jobs run in separate processes
(started with ``spawn``: forking a threaded web server is unsafe). Each
worker process is driven by one thread of the pool, which hands it a job,
waits for the answer, and kills it when the job is dismissed; a fresh
process then takes its place. The pool knows nothing about Prefect: the
manager gives it the hooks that record each step.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import pygeoapi_prefect.metrics as metrics
from pygeoapi_prefect.execution.execute import (
    JobRequest,
    Outcome,
    load_processor,
    run_job,
    store_outcome,
)
from pygeoapi_prefect.execution.heartbeat import beating
from pygeoapi_prefect.execution.joblogs import job_logging
from pygeoapi_prefect.jobs.results import ResultStore
from pygeoapi_prefect.progress import labels_reporter, reporting_to

logger = logging.getLogger(__name__)

__all__ = ["JobHooks", "LocalRunner"]

_CTX = multiprocessing.get_context("spawn")
_POLL_SECONDS = 0.05
_READY = "ready"
#: How long a new worker process may take to import what it needs.
_START_SECONDS = 120.0


@dataclass(frozen=True)
class JobHooks:
    """What the pool calls as a job moves on (all from the pool's threads).

    Attributes:
        started: called before the job runs; returning False skips it (it was
            dismissed meanwhile).
        finished: called with the outcome once the job has run.
        cancelled_elsewhere: polled while the job runs; True kills it.
        killed: called after a job's process was killed on dismissal.

    """

    started: Callable[[JobRequest], bool]
    finished: Callable[[JobRequest, Outcome], None]
    cancelled_elsewhere: Callable[[JobRequest], bool]
    killed: Callable[[JobRequest], None]


#: The final message of a job whose pygeoapi instance stopped while it ran.
INTERRUPTED = "Interrupted: the pygeoapi instance running the job was stopped; submit the job again"


def _record_alone(api_url: str | None, request: JobRequest, outcome: Outcome) -> None:
    """Record a job's end from its worker process, whose pygeoapi is gone.

    The pool thread that would have done it died with its server (SIGKILL):
    the job's output is in the store, and only its state is left to set
    (retried through an outage, as every step of an accepted job).
    """
    if not api_url:
        return
    from pygeoapi_prefect.errors import PrefectManagerError
    from pygeoapi_prefect.execution.persist import persist
    from pygeoapi_prefect.jobs.runs import DEFAULT_MIMETYPE, MIMETYPE_LABEL
    from pygeoapi_prefect.prefect.api import PrefectAPI
    from pygeoapi_prefect.prefect.states import state

    api = PrefectAPI(api_url)
    final = state("COMPLETED", "Job complete") if outcome.ok else state("FAILED", outcome.message)
    try:
        if outcome.ok and outcome.mimetype != DEFAULT_MIMETYPE:
            persist(api.update_labels, request.job_id, {MIMETYPE_LABEL: outcome.mimetype})
        persist(api.set_state, request.job_id, final)
        logger.info("job %s ended after its pygeoapi instance stopped", request.job_id)
    except PrefectManagerError as exc:
        logger.error("could not record the end of job %s: %s", request.job_id, exc)


def _worker_main(
    conn: Connection,
    store_url: str,
    storage_options: dict[str, Any],
    api_url: str | None,
    heartbeat_seconds: float | None = None,
) -> None:
    # Our own process group, so that a dismiss kills whatever the process
    # started too; Ctrl-C is for the server, which stops us itself.
    os.setsid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The parent starts us as a daemon (so it never waits for us at exit),
    # but a processor may start processes of its own, which multiprocessing
    # refuses to a daemon: inside this process, we are not one.
    multiprocessing.current_process().daemon = False
    import pygeoapi.plugin  # noqa: F401 - the slow import, done before we say ready

    store = ResultStore(store_url, storage_options)
    processors: dict[str, Any] = {}
    conn.send(_READY)
    while True:
        try:
            request: JobRequest | None = conn.recv()
        except EOFError:
            return
        if request is None:
            return
        try:
            processor = processors.get(request.process_id)
            if processor is None:
                processor = processors[request.process_id] = load_processor(request.process_conf)
            processor.set_job_id(request.job_id)
            reporter = (
                labels_reporter(api_url, request.job_id, events=request.events) if api_url else None
            )
            with (
                beating(api_url, request.job_id, heartbeat_seconds),
                reporting_to(reporter),
                job_logging(api_url, request.job_id, request.logs),
            ):
                outcome = run_job(
                    processor,
                    request.inputs,
                    request.requested_outputs,
                    job_label=f"job {request.job_id} of process {request.process_id}",
                    store=store,
                    job_id=functools.partial(str, request.result_key),
                    references=request.references,
                    process_conf=request.process_conf,
                )
            if outcome.ok:
                store_outcome(
                    store, request.result_key, outcome, request.response, request.requested_outputs
                )
            # The output is in the store; only the summary crosses the pipe.
            outcome.outputs = None
        except Exception as exc:  # noqa: BLE001 - reported to the parent, never lost
            logger.exception("worker failed to run job %s", request.job_id)
            outcome = Outcome(ok=False, message=f"{exc.__class__.__name__}: {exc}")
        try:
            conn.send(outcome)
        except OSError:
            # Our pygeoapi was killed while the job ran: finish it ourselves.
            _record_alone(api_url, request, outcome)
            return


class _Worker:
    """One worker process and the thread that drives it."""

    def __init__(self, pool: LocalRunner, index: int) -> None:
        self.pool = pool
        self.index = index
        self.process: Any = None
        self.conn: Connection | None = None
        self.ready = False
        self.current: JobRequest | None = None
        #: Whether ``current`` was claimed and started here (not only taken off the queue).
        self.started_job = False
        #: The id of the job to kill; checked against the job that runs, so a
        #: late dismiss can never hit the next job.
        self.kill_for: str | None = None
        self.idle = threading.Event()
        self.idle.set()
        #: The metrics of the job in hand.
        self.watch = metrics.watch("")
        self.thread = threading.Thread(
            target=self._loop, name=f"pygeoapi-prefect-worker-{index}", daemon=True
        )

    def spawn(self) -> None:
        parent, child = _CTX.Pipe()
        process = _CTX.Process(
            target=_worker_main,
            args=(
                child,
                self.pool.store.url,
                self.pool.store.storage_options,
                self.pool.api_url,
                self.pool.heartbeat_seconds,
            ),
            name=f"pygeoapi-prefect-worker-{self.index}",
            daemon=True,
        )
        process.start()
        child.close()
        self.process, self.conn = process, parent
        self.ready = False

    def wait_ready(self) -> None:
        """Wait for the worker process to have started (so a job's run time is its own)."""
        if self.ready:
            return
        assert self.conn is not None
        if not self.conn.poll(_START_SECONDS) or self.conn.recv() != _READY:
            raise RuntimeError(f"the worker process did not start within {_START_SECONDS:.0f} s")
        self.ready = True

    def kill(self) -> None:
        if self.process is not None and self.process.is_alive():
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.process.kill()
            self.process.join(5)
        if self.conn is not None:
            try:
                self.conn.close()
            except OSError:
                pass  # already closed by a concurrent shutdown
        self.process = self.conn = None

    def _kill_requested(self, request: JobRequest) -> bool:
        return self.kill_for == request.job_id

    def _loop(self) -> None:
        while True:
            request = self.pool.queue.get()
            if request is None:
                return
            with self.pool.lock:
                watch = self.pool.watches.pop(request.job_id, None)
                self.watch = watch or metrics.watch(request.process_id)
                if not self.pool.taking or request.job_id in self.pool.dismissed:
                    # Stopping (the job stays Pending for another process to
                    # take), or dismissed while queued.
                    self.watch.dequeued()
                    if request.job_id in self.pool.dismissed:
                        metrics.job_finished(request.process_id, "dismissed")
                    self.pool.dismissed.discard(request.job_id)
                    self.pool.held.discard(request.job_id)
                    continue
                self.current = request
            self.idle.clear()
            metrics.pool_busy(1)
            try:
                if self.process is None or not self.process.is_alive():
                    self.spawn()
                self.wait_ready()
                self._run(request)
            except Exception as exc:  # noqa: BLE001 - one job must not stop the pool
                if not self.started_job and not self.pool.taking:
                    # Stopping while its process started: the job never ran
                    # here, and stays Pending for another process to take.
                    logger.info("job %s left for another process", request.job_id)
                else:
                    logger.exception("local runner failed to handle job %s", request.job_id)
                    self._report_failure(request, exc)
            finally:
                self.watch.end()
                self.watch.dequeued()
                with self.pool.lock:
                    self.pool.held.discard(request.job_id)
                    self.current = None
                    self.kill_for = None
                    self.started_job = False
                metrics.pool_busy(-1)
                self.idle.set()

    def _report_failure(self, request: JobRequest, exc: Exception) -> None:
        try:
            self.pool.hooks.finished(
                request, Outcome(ok=False, message=f"The job could not be run: {exc}")
            )
        except Exception:  # noqa: BLE001 - already logged above; nothing more to do
            logger.exception("could not record the failure of job %s", request.job_id)

    def _run(self, request: JobRequest) -> None:
        hooks = self.pool.hooks
        if not self.pool.taking:
            return  # stopping while its process started: left Pending for others
        if not hooks.started(request):
            return
        self.started_job = True
        self.watch.start()
        conn = self.conn  # kill() may clear self.conn from another thread
        assert conn is not None
        conn.send(request)
        next_check = time.monotonic() + self.pool.cancel_check_seconds
        while True:
            if self._kill_requested(request):
                self._killed(request)
                return
            try:
                if conn.poll(_POLL_SECONDS):
                    outcome: Outcome = conn.recv()
                    break
            except (EOFError, OSError):
                if self.pool.stopping:
                    return  # shutdown() records the job
                outcome = Outcome(
                    ok=False,
                    message="The worker process running the job died (killed, or out of memory)",
                )
                self.kill()
                break
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + self.pool.cancel_check_seconds
                try:
                    elsewhere = hooks.cancelled_elsewhere(request)
                except Exception:  # noqa: BLE001 - a failed check is retried next time
                    logger.warning("could not check job %s for cancellation", request.job_id)
                    elsewhere = False
                if elsewhere:
                    self._killed(request)
                    return
        if self._kill_requested(request):
            self._killed(request)
            return
        hooks.finished(request, outcome)

    def _killed(self, request: JobRequest) -> None:
        self.kill()
        logger.info("killed the worker process of dismissed job %s", request.job_id)
        self.pool.hooks.killed(request)


class LocalRunner:
    """Runs async jobs in ``max_workers`` killable worker processes.

    Example::

        runner = LocalRunner(store, hooks, max_workers=2)
        runner.submit(JobRequest(job_id, "hello-world", conf, {"name": "x"}))
        runner.dismiss(job_id)   # kills it if it runs, drops it if queued

    Args:
        store: where the workers write results.
        hooks: the manager's bookkeeping callbacks.
        max_workers: how many jobs run at once.
        cancel_check_seconds: how often a running job's cancellation elsewhere
            is checked.
        api_url: the Prefect API the workers report progress to.
        heartbeat_seconds: how often a running job sends a heartbeat (None: never).

    """

    def __init__(
        self,
        store: ResultStore,
        hooks: JobHooks,
        *,
        max_workers: int = 2,
        cancel_check_seconds: float = 1.0,
        api_url: str | None = None,
        heartbeat_seconds: float | None = None,
    ) -> None:
        store.fs  # noqa: B018 - resolve a block-defined store once, for the workers
        self.store = store
        self.api_url = api_url
        self.heartbeat_seconds = heartbeat_seconds
        self.stopping = False
        #: False once the process stops: queued jobs are left for others.
        self.taking = True
        self.hooks = hooks
        self.cancel_check_seconds = cancel_check_seconds
        self.queue: queue.Queue[JobRequest | None] = queue.Queue()
        self.lock = threading.Lock()
        #: Queued jobs dismissed before a worker took them.
        self.dismissed: set[str] = set()
        #: Jobs queued or running here, from submit() until their thread is done.
        self.held: set[str] = set()
        #: The metrics of the queued jobs (time in the queue).
        self.watches: dict[str, metrics.JobWatch] = {}
        self.workers = [_Worker(self, index) for index in range(max_workers)]
        for worker in self.workers:
            worker.spawn()
            worker.thread.start()
        metrics.pool_size(max_workers)

    def submit(self, request: JobRequest) -> bool:
        """Queue a job; it starts as soon as a worker is free.

        False (and nothing queued) if the job is queued or running here already.
        """
        with self.lock:
            if request.job_id in self.held:
                return False
            self.held.add(request.job_id)
            self.watches[request.job_id] = metrics.watch(request.process_id, queued=True)
        self.queue.put(request)
        return True

    def dismiss(self, job_id: str, *, timeout: float = 5.0) -> bool:
        """Stop a job of this pool: kill it if running, skip it if queued.

        Returns once nothing of the job runs any more (or after ``timeout``);
        True if the job was running or queued here.
        """
        with self.lock:
            target = next(
                (w for w in self.workers if w.current is not None and w.current.job_id == job_id),
                None,
            )
            if target is None:
                with self.queue.mutex:
                    queued = any(r is not None and r.job_id == job_id for r in self.queue.queue)
                if queued:
                    self.dismissed.add(job_id)
                return queued
            target.kill_for = job_id
            running = target.current
        deadline = time.monotonic() + timeout
        while target.current is running and time.monotonic() < deadline:
            time.sleep(_POLL_SECONDS)
        return True

    def holds(self, job_id: str) -> bool:
        """Whether the job is queued or running in this pool."""
        with self.lock:
            return job_id in self.held

    def stop_taking(self) -> None:
        """Start no further job (safe in a signal handler: sets a flag only)."""
        self.taking = False

    def shutdown(self, grace: float = 0.0) -> None:
        """Stop the worker processes.

        Queued jobs are not run here (they stay Pending in Prefect, and
        another process takes them over); running jobs get ``grace`` seconds
        to finish, then are killed and recorded as failed with
        :data:`INTERRUPTED`.
        """
        self.taking = False
        with self.queue.mutex:
            self.queue.queue.clear()
        with self.lock:
            for watch in self.watches.values():
                watch.dequeued()  # left for the other processes
            self.watches.clear()
        for _ in self.workers:
            self.queue.put(None)
        deadline = time.monotonic() + grace
        for worker in self.workers:
            worker.idle.wait(max(0.0, deadline - time.monotonic()))
        self.stopping = True
        with self.lock:
            # Only started jobs are interrupted; one whose process was still
            # starting was never claimed, and another process takes it.
            busy = [w.current for w in self.workers if w.current is not None and w.started_job]
        for worker in self.workers:
            worker.kill()
        metrics.pool_size(-len(self.workers))
        for request in busy:
            try:
                self.hooks.finished(request, Outcome(ok=False, message=INTERRUPTED))
            except Exception:  # noqa: BLE001 - the next start's zombie check remains
                logger.exception("could not record the interruption of job %s", request.job_id)
