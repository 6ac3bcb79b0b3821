"""The engine: one per OS process and manager config, shared by every manager.

pygeoapi builds a manager for each ``API`` object (Django: one per request),
and a server may fork its workers after importing the app (``gunicorn
--preload``). So nothing that lives at run time belongs to the manager: the
Prefect client and its connection pool, the result store, the local worker
pool, the timers, the thread pool, the lease and the recovery loop live
here, in an :class:`Engine` looked up by :func:`engine_for`:

- built lazily, on first use, in the process that uses it; a forked child
  forgets its parent's engines (``os.register_at_fork``) and builds its own;
- started (lease, recovery loop, zombie automation) by :func:`autostart`,
  which the apps call when imported, or on first use; not in a preloading
  gunicorn master, whose workers start theirs right after the fork;
- closed at interpreter exit (``atexit``, before multiprocessing's own exit
  handler terminates the worker processes) and on SIGTERM/SIGINT, chaining
  whatever handler the server installed.
"""

from __future__ import annotations

import atexit
import collections
import concurrent.futures.thread  # noqa: F401 - its fork hook first (see below)
import json
import logging
import os
import random
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import pygeoapi_prefect.metrics as metrics
from pygeoapi_prefect.config import ManagerConfig
from pygeoapi_prefect.errors import ConfigError, PrefectManagerError, PrefectUnavailable
from pygeoapi_prefect.events import EventPublisher
from pygeoapi_prefect.execution import seed as seeds
from pygeoapi_prefect.execution.backlog import Backlog
from pygeoapi_prefect.execution.callbacks import CallbackPolicy
from pygeoapi_prefect.execution.daemons import DaemonPool
from pygeoapi_prefect.execution.heartbeat import ensure_zombie_automation
from pygeoapi_prefect.execution.leases import Leases, new_holder_id
from pygeoapi_prefect.execution.local import LocalRunner
from pygeoapi_prefect.execution.persist import Retries
from pygeoapi_prefect.execution.slots import SlotFiles, server_directory, shared_gate
from pygeoapi_prefect.execution.timers import Timers
from pygeoapi_prefect.jobs.counting import CountCache
from pygeoapi_prefect.jobs.published import PublishedProcesses
from pygeoapi_prefect.jobs.results import ResultStore
from pygeoapi_prefect.prefect.api import PrefectAPI, SharedGate, prefect_settings_api_url

logger = logging.getLogger(__name__)

__all__ = ["Engine", "autostart", "close_all", "engine_for", "engine_key"]

#: How many started job ids a process remembers (a job reaches a process
#: twice only within seconds: its takeover scans).
_STARTED_MEMORY = 100_000


#: Seconds a stopping engine waits past the retries' end for their last log lines.
_LAST_WORDS = 0.5


class Engine:
    """Everything one manager config needs at run time in one OS process.

    Args:
        config: the validated ``server.manager`` block.

    """

    def __init__(self, config: ManagerConfig) -> None:
        self.config = config
        self.pid = os.getpid()
        if config.metrics.enabled:
            metrics.enable()  # in the server process only: worker processes build no engine
        #: This process's holder id (a new one in every process and engine).
        self.holder = new_holder_id()
        #: How this process is named in Prefect (claims, logs).
        self.name = f"{socket.gethostname()} pid {self.pid}"
        self.callbacks = CallbackPolicy.from_config(config.callbacks)
        self.timers = Timers()
        #: Prefect writes off the request path (names, summaries, log lines), bounded;
        #: the UI's extras run on their own threads (:meth:`extras`).
        self.backlog = Backlog(lambda call: self.extras().submit(call), config.background_backlog)
        self.counts = CountCache(config.job_count_cache_seconds)
        #: Job steps retried through a Prefect outage, cut short once this process stops.
        self.retries = Retries()
        self.persist = self.retries.persist
        self.published = PublishedProcesses(config.publish)
        self.deployment_ids: dict[str, str] = {}
        self._configured = collections.OrderedDict(
            (pid, dict(conf)) for pid, conf in config.processes.items()
        )
        self._lock = threading.RLock()
        self._api: PrefectAPI | None = None
        self._reports: PrefectAPI | None = None
        self._store: ResultStore | None = None
        self._runner: LocalRunner | None = None
        self._threads: DaemonPool | None = None
        self._recorder: DaemonPool | None = None
        self._extras: DaemonPool | None = None
        self._slots: Path | None = None
        self._leases: Leases | None = None
        self._started = False
        self._stopping = threading.Event()
        self._housekeeper: threading.Thread | None = None
        self._automation_done = False
        self._started_jobs: collections.OrderedDict[str, None] = collections.OrderedDict()
        #: Job events on pygeoapi's pub/sub broker (None: no ``pubsub`` configured).
        self.events: EventPublisher | None = None

    def __repr__(self) -> str:
        return f"<Engine {self.name} holder {self.holder}>"

    def processes(self) -> collections.OrderedDict[str, dict[str, Any]]:
        """The configured processes, then the published deployments (the config wins)."""
        published = self.published.get(self.api) if self.config.publish.enabled else {}
        if not published:
            return self._configured
        merged = collections.OrderedDict(self._configured)
        for process_id, resource in published.items():
            merged.setdefault(process_id, resource)
        return merged

    def use_pubsub(self, settings: dict[str, Any] | None) -> Engine:
        """Publish job events on pygeoapi's ``pubsub`` broker (the first settings win)."""
        if self.events is not None or not settings:
            return self
        with self._lock:
            if self.events is None:
                self.events = EventPublisher(
                    settings,
                    lambda job_id: self.api.read_flow_run(job_id),
                    ui_url=lambda job_id: self.api.flow_run_url(job_id),
                )
        return self

    # -- parts, built on first use ------------------------------------------

    @property
    def api(self) -> PrefectAPI:
        """The Prefect API client."""
        if self._api is None:
            url = self.config.connection or prefect_settings_api_url()
            if not url:
                raise PrefectUnavailable(
                    "No Prefect API is configured: set server.manager.connection "
                    "in the pygeoapi config or PREFECT_API_URL in the environment"
                )
            with self._lock:
                if self._api is None:
                    self._api = PrefectAPI(
                        url,
                        timeout=self.config.api_timeout,
                        write_concurrency=self.config.api_write_concurrency,
                        shared_writes=self._shared_writes(),
                    )
        return self._api

    @property
    def reports(self) -> PrefectAPI:
        """The client that sends the local jobs' relayed reports (heartbeats, progress, logs).

        Not :attr:`api`: a job process that sent them itself had a client of
        its own, outside ``api_write_concurrency``; behind the server's write
        turns (creates first), a burst of submissions delayed each job's end
        by its log lines (its pool thread sends them before the end).
        """
        if self._reports is None:
            api = self.api
            with self._lock:
                if self._reports is None:
                    self._reports = PrefectAPI(
                        api.api_url,
                        timeout=self.config.api_timeout,
                        write_concurrency=self.config.local.max_workers,
                    )
        return self._reports

    @property
    def store(self) -> ResultStore:
        """The result store."""
        if self._store is None:
            with self._lock:
                if self._store is None:
                    results = self.config.results
                    if results.block:
                        self._store = ResultStore(block=results.block, api_url=self.api.api_url)
                    else:
                        self._store = ResultStore(
                            self.config.results_url(), results.storage_options
                        )
        return self._store

    @property
    def leases(self) -> Leases:
        """This process's lease on its queued jobs."""
        if self._leases is None:
            with self._lock:
                if self._leases is None:
                    self._leases = Leases(self.api, self.holder, self.config.recovery.lease_seconds)
        return self._leases

    @property
    def runner(self) -> LocalRunner:
        """The pool of worker processes for local async jobs, started on first use."""
        if self._stopping.is_set():
            raise PrefectUnavailable(
                "This pygeoapi process is stopping and accepts no new async jobs; try again"
            )
        if self._runner is None:
            from pygeoapi_prefect.execution.async_jobs import local_hooks

            api, store = self.api, self.store  # built outside the lock they take too
            with self._lock:
                if self._runner is None:
                    local = self.config.local
                    self._runner = LocalRunner(
                        store,
                        local_hooks(self),
                        max_workers=local.max_workers,
                        cancel_check_seconds=local.cancel_check_seconds,
                        api_url=api.api_url,
                        heartbeat_seconds=self.config.heartbeat.interval,
                        process_limits=local.process_limits,
                        # The template loads their processors once, for every job.
                        process_confs=_local_processes(self._configured),
                        idle_seconds=local.idle_seconds,
                        slots=self._slot_directory(),
                        visible_after=local.async_visible_after,
                    )
            self.start()
        return self._runner

    def _shared_writes(self) -> SharedGate | None:
        # With one pool per server, its processes share api_write_concurrency too.
        directory = self._slot_directory()
        if directory is None:
            return None
        return shared_gate(SlotFiles(directory, "prefect-write", self.config.api_write_concurrency))

    def _slot_directory(self) -> Path | None:
        # Where the worker processes of this server share their job slots
        # (slots.py): made (and stale ones cleared) once, for the API's
        # write turns and the pool alike.
        local = self.config.local
        if local.pool_scope != "server":
            return None
        if self._slots is not None:
            return self._slots
        try:
            if local.pool_dir is not None:
                directory = Path(local.pool_dir).expanduser()
                directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            else:
                directory = server_directory(self.config.model_dump_json())
        except OSError as exc:
            key = "pool_dir" if local.pool_dir is not None else "pool_scope"
            raise ConfigError(
                f"server.manager.local.{key}: cannot make the directory of the job slots "
                f"shared by this server's processes ({exc}); name a writable `pool_dir`, or "
                "set `pool_scope: process`"
            ) from exc
        self._slots = directory
        return directory

    @property
    def runner_if_started(self) -> LocalRunner | None:
        """The local pool if this process has one (dismiss looks there)."""
        return self._runner

    def _executor(self, name: str, workers: int, prefix: str) -> DaemonPool:
        # The thread pool kept in attribute ``name``, made on first use.
        pool: DaemonPool | None = getattr(self, name)
        if pool is None:
            with self._lock:
                pool = getattr(self, name)
                if pool is None:
                    pool = DaemonPool(workers, prefix)
                    setattr(self, name, pool)
        return pool

    def background(self) -> DaemonPool:
        """A few threads for work off the request path (counts, callbacks' status)."""
        return self._executor("_threads", 4, "pygeoapi-prefect")

    def extras(self) -> DaemonPool:
        """The thread of the Prefect UI's extras (run names, summaries).

        Their writes go after every other write (``PrefectAPI`` ranks them
        last, and they may wait long for their turn under a burst), so they
        have threads of their own: never the ones a job count waits for.
        """
        workers = max(1, min(4, self.config.api_write_concurrency))
        return self._executor("_extras", workers, "pygeoapi-prefect-extras")

    def first_start(self, job_id: str) -> bool:
        """True the first time this process starts the job, False ever after.

        The claim is per holder (a retried claim after a lost answer wins
        again), so this process also remembers what it started: a job that
        reached it twice (queued here, then taken over again) runs once.
        """
        with self._lock:
            if job_id in self._started_jobs:
                return False
            self._started_jobs[job_id] = None
            if len(self._started_jobs) > _STARTED_MEMORY:
                self._started_jobs.popitem(last=False)
            return True

    def recorder(self) -> DaemonPool:
        """Threads that write deferred sync records while Prefect is out of reach."""
        return self._executor("_recorder", 2, "pygeoapi-prefect-recorder")

    def record_later(self, call: Callable[..., Any], *args: Any) -> None:
        """Run a deferred Prefect write on the recorder threads.

        A request that ends while this engine closes (uvicorn cancels the
        requests that outlive its graceful timeout; their threads go on)
        finds the threads closed: the write is dropped with an ERROR, and
        the request still answers.
        """
        try:
            self.recorder().submit(call, *args)
        except RuntimeError:
            logger.error(
                "a deferred Prefect write (%s) is dropped: this process has stopped",
                getattr(call, "__qualname__", call),
            )

    # -- life cycle -----------------------------------------------------------

    def start(self) -> None:
        """Start the lease, the recovery loop and the sweeper and watcher threads (idempotent).

        No I/O in the caller.
        """
        with self._lock:
            if self._started or self._stopping.is_set():
                return
            self._started = True
            self._housekeeper = threading.Thread(
                target=self._housekeep, name="pygeoapi-prefect-engine", daemon=True
            )
            self._housekeeper.start()
            retention = self.config.retention
            if retention.sweep_seconds and (
                retention.max_age is not None or retention.max_jobs is not None
            ):
                # A thread of its own: a long sweep must not delay the lease's renewals.
                from pygeoapi_prefect.execution.retention import sweep_forever

                threading.Thread(
                    target=sweep_forever,
                    args=(self, self._stopping),
                    name="pygeoapi-prefect-retention",
                    daemon=True,
                ).start()
            if self.config.watch.enabled is not False:
                # Ends made outside pygeoapi; each pass checks whether anything wants them.
                from pygeoapi_prefect.execution.watcher import watch_forever

                threading.Thread(
                    target=watch_forever,
                    args=(self, self._stopping),
                    name="pygeoapi-prefect-watcher",
                    daemon=True,
                ).start()

    def _housekeep(self) -> None:
        from pygeoapi_prefect.execution.recovery import take_over

        recovery = self.config.recovery
        renew_every = recovery.lease_seconds / 4
        next_scan = 0.0  # at once: jobs handed over by a stopped process run now
        waited = 0.0
        delay = 1.0
        while not self._stopping.is_set():
            try:
                self._install_automation()
                self.leases.renew()
                if waited >= next_scan:
                    taken = take_over(self)
                    if taken:
                        logger.info("took over %d queued job(s) of stopped processes", taken)
                    waited = 0.0
                    # Jittered, so that the processes of a server do not scan together.
                    next_scan = recovery.scan_seconds * random.uniform(0.8, 1.0)
                delay = 1.0
            except PrefectManagerError as exc:
                logger.warning("lease or recovery step failed (retrying): %s", exc)
                renew_wait = min(delay, renew_every)
                delay = min(delay * 2, 30.0)
                self._stopping.wait(renew_wait)
                waited += renew_wait
                continue
            except Exception:  # noqa: BLE001 - the loop must outlive any one failure
                logger.exception("lease or recovery step failed")
            step = min(renew_every, max(0.05, next_scan - waited))
            self._stopping.wait(step)
            waited += step

    def _install_automation(self) -> None:
        if self._automation_done or not self.config.heartbeat.install_automation:
            return
        try:
            ensure_zombie_automation(self.api, self.config.heartbeat.zombie_timeout)
        except PrefectUnavailable:
            raise
        except PrefectManagerError as exc:
            logger.warning(
                "the zombie automation was not installed (server.manager.heartbeat): %s", exc
            )
        self._automation_done = True

    @property
    def stopping(self) -> bool:
        """Whether this engine is stopping (takes no new jobs)."""
        return self._stopping.is_set()

    def begin_shutdown(self) -> None:
        """Stop taking jobs (safe in a signal handler: no lock, no I/O)."""
        self._stopping.set()
        self.retries.stop_within(self.config.local.shutdown_grace + self.config.drain_seconds)
        runner = self._runner
        if runner is not None:
            runner.stop_taking()

    def close(self) -> None:
        """Let running jobs finish (``local.shutdown_grace``), hand queued ones over, close.

        The Prefect writes still waiting then get ``drain_seconds`` more;
        what is left is abandoned, with a WARNING.
        """
        self.begin_shutdown()  # the recovery loop sees it and ends (a daemon: not waited for)
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.shutdown(grace=self.config.local.shutdown_grace)
        drain = self.config.drain_seconds
        self.retries.stop_within(drain)
        stopped = time.monotonic()  # the jobs' end: both drains count from here
        deadline = stopped + drain
        if self._leases is not None:
            self._leases.release()
        # Callbacks of the jobs that just ended drain alongside the writes,
        # each against its own bound (callbacks.drain_seconds).
        self.callbacks.close_by(stopped + self.config.callbacks.drain_seconds)
        # A moment past the retries' end, for a step given up to log which job it leaves.
        left = {
            name: threads.close(deadline + _LAST_WORDS)
            for name, threads in (
                ("deferred records", self._recorder),
                ("background", self._threads),
                ("UI extras", self._extras),
            )
            if threads is not None
        }
        if any(left.values()):
            logger.warning(
                "stopping: Prefect writes abandoned after %.1f s "
                "(server.manager.drain_seconds): %s",
                drain,
                ", ".join(f"{count} {name}" for name, count in left.items() if count),
            )
        if self.events is not None:
            self.events.flush(2.0)  # the last steps' events, briefly
            self.events.close()
        for api in (self._api, self._reports):
            if api is not None:
                api.close()


# -- the process-wide registry ------------------------------------------------

_ENGINES: dict[str, Engine] = {}
_REGISTRY_LOCK = threading.Lock()
#: Engines of a parent process, kept (never used, never closed) in a forked child.
_INHERITED: list[Engine] = []
#: The configs to start after a fork, with pygeoapi's ``pubsub`` block of each.
_AUTOSTART: list[tuple[ManagerConfig, dict[str, Any] | None]] = []
_HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_exit_hooks_installed = False


def engine_key(config: ManagerConfig) -> str:
    """What tells configs apart in the registry (a manager computes it once)."""
    return json.dumps(config.model_dump(mode="json"), sort_keys=True, default=str)


def engine_for(config: ManagerConfig, key: str | None = None) -> Engine:
    """The engine of this config in this process, built on first use.

    ``key`` is :func:`engine_key` of the config, when the caller has it.
    """
    key = key or engine_key(config)
    engine = _ENGINES.get(key)
    if engine is not None and engine.pid == os.getpid():
        return engine
    with _REGISTRY_LOCK:
        engine = _ENGINES.get(key)
        if engine is None or engine.pid != os.getpid():
            engine = _ENGINES[key] = Engine(config)
            _install_exit_hooks()
    return engine


def close_all() -> None:
    """Close every engine of this process (at exit; also for tests and tools)."""
    with _REGISTRY_LOCK:
        engines = [e for e in _ENGINES.values() if e.pid == os.getpid()]
        _ENGINES.clear()
    for engine in engines:
        try:
            engine.close()
        except Exception:  # noqa: BLE001 - one engine must not keep the others open
            logger.exception("closing %r failed", engine)


def _after_fork_in_child() -> None:
    # The parent's threads do not exist here and its sockets and pipes are
    # shared: keep its engines out of reach (unclosed), and start afresh. Its
    # exit and signal hooks are inherited with the fork: they stay installed.
    # The local pool's template and its job processes are forks too: no engine.
    if seeds.forked_from_seed():
        return
    _INHERITED.extend(_ENGINES.values())
    _ENGINES.clear()
    for config, pubsub in _AUTOSTART:
        _plant(config)
        engine_for(config).use_pubsub(pubsub).start()


def _local_processes(resources: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    # The configured processes that run here, not on a Prefect deployment.
    return {
        process_id: resource
        for process_id, resource in resources.items()
        if not (resource.get("processor") or {}).get("deployment")
    }


def _load_processors(config: ManagerConfig) -> None:
    # pygeoapi loads every processor in the server process to describe it
    # (GET /processes). Loaded once here, before the seed is forked (under
    # gunicorn --preload: in the master, before it forks the workers), their
    # modules are pages that the server, its template and their jobs share;
    # imported after the fork, the server's copy and the template's would
    # each be their own (with a Prefect flow process: Prefect, ~30 MiB).
    from pygeoapi_prefect.execution.execute import load_processor

    # Not those on a deployment: describing one may need Prefect's API.
    for process_id, resource in _local_processes(config.processes).items():
        try:
            load_processor(resource)
        except Exception:  # noqa: BLE001 - pygeoapi reports it where it describes the process
            logger.debug("could not load the processor of %s at start", process_id, exc_info=True)


def _plant(config: ManagerConfig) -> None:
    # Before any thread of ours starts: the pool's template forked from this process.
    if config.local.template_start == "fork" and not seeds.plant():
        logger.info(
            "the local pool's template is spawned: this process runs other threads "
            "already (server.manager.local.template_start)"
        )


# The hook may fork again (the seed, under gunicorn --preload). A fork hook
# registered after it would still hold its lock then: concurrent.futures
# holds its shutdown lock across every fork and frees it in the child only
# in its own hook. Imported at the top of this module, it registers first.
os.register_at_fork(after_in_child=_after_fork_in_child)


def _install_exit_hooks() -> None:
    global _exit_hooks_installed
    if _exit_hooks_installed:
        return
    _exit_hooks_installed = True
    # Registered after multiprocessing's own exit handler (imported with the
    # local pool), so it runs first: jobs are drained before their worker
    # processes are terminated.
    atexit.register(close_all)
    if threading.current_thread() is threading.main_thread():
        for signum in _HANDLED_SIGNALS:
            _chain(signum)


def _chain(signum: int) -> None:
    previous = signal.getsignal(signum)
    if getattr(previous, "_pygeoapi_prefect", False):
        return

    def handler(sig: int, frame: FrameType | None) -> None:
        for engine in list(_ENGINES.values()):
            if engine.pid == os.getpid():
                engine.begin_shutdown()
        if callable(previous):
            previous(sig, frame)
        elif previous == signal.SIG_DFL:
            # Nobody else handles it: finish as the default would, after a drain.
            close_all()
            signal.signal(sig, signal.SIG_DFL)
            os.kill(os.getpid(), sig)

    handler._pygeoapi_prefect = True  # type: ignore[attr-defined]
    try:
        signal.signal(signum, handler)
    except (ValueError, OSError):  # not the main thread, or not allowed here
        return


def _in_preloading_gunicorn_master() -> bool:
    # gunicorn --preload imports the app in Arbiter.setup, before forking the
    # workers; anything started here would be inherited half-dead by them.
    if "gunicorn.arbiter" not in sys.modules:
        return False
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if code.co_filename.endswith(os.path.join("gunicorn", "arbiter.py")) and code.co_name in (
            "setup",
            "__init__",
        ):
            return True
        frame = frame.f_back
    return False


def autostart(manager: Any) -> None:
    """Start the engine of pygeoapi's manager in the process that will serve.

    Called by the apps when imported. In a preloading gunicorn master it
    only arranges for each forked worker to start its own. A no-op for
    managers other than ours.
    """
    config = getattr(manager, "config", None)
    if not isinstance(config, ManagerConfig):
        return
    # The broker from the start: the job watcher's scope names it, and every
    # process of a server must watch in the same scope.
    pubsub = getattr(manager, "pubsub", None)
    if not any(known == config for known, _ in _AUTOSTART):
        _AUTOSTART.append((config, pubsub))
    if config.local.template_start == "fork":
        _load_processors(config)
    if _in_preloading_gunicorn_master():
        logger.info("gunicorn --preload: the engine starts in each worker after the fork")
        return
    _plant(config)
    engine_for(config).use_pubsub(pubsub).start()
