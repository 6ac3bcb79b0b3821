"""A copy of the server process forked before it serves, to become the pool's template.

The local pool's template (``local.py``) imports pygeoapi and the config's
processors once and then forks a process per job. Spawned, it is a fresh
interpreter that imports everything again: 54-84 MiB of its own in every
server process. The server process itself has imported all of it by the
time the app is built, but forking it once it serves is unsafe (its threads
may hold locks). So :func:`plant` forks it earlier, from the app's import,
while only the main thread exists: the *seed*, a copy that waits on a pipe
and shares every page of the server's heap until one of them writes it. The
pool's first template then runs in the seed (:meth:`Seed.grow`), not in a
new interpreter.

For the pages to stay shared, the server's heap as it is at that moment is
moved out of reach of the garbage collector (``gc.freeze()``, as gunicorn
recommends for ``--preload``): a collection writes to every object it
scans, which would make the server copy each page it then shares with the
template. Objects frozen there are still freed by their reference counts,
only a cycle among them is not.

The seed keeps nothing of the server that could act: the signal handlers
the server installed are reset (Ctrl-C is for the server, which then stops
the template), the server's listening sockets are closed in it (a job that
outlives its server must not keep the port bound), nothing runs at its exit
(``os._exit``), and the fork hooks that start an engine in a forked worker
stay quiet in it and in the job processes it forks (:func:`forked_from_seed`).
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import signal
import socket
import stat
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["JOB_NAME", "NAME", "Seed", "forked_from_seed", "name_process", "plant", "take"]

#: The command names of the template and of a job process, as ``ps -o comm``
#: and ``top`` show them (a forked process keeps its parent's command line).
NAME = "pygeoapi-templ"
JOB_NAME = "pygeoapi-job"

_SEED: Seed | None = None
#: True in the seed and every process forked from it (set before the fork,
#: so that the fork hooks running inside ``os.fork`` see it already).
_IN_SEED = False
_PLANT_LOCK = threading.Lock()


def forked_from_seed() -> bool:
    """True in the seed, the template it became and its job processes."""
    return _IN_SEED


class Seed:
    """The forked copy of this process, and the pipe it waits on.

    Also what the pool keeps of the template it grows into: ``pid``,
    :meth:`is_alive`, :meth:`join` and :meth:`kill`, as a
    ``multiprocessing.Process`` has them.
    """

    def __init__(self, pid: int, conn: Connection) -> None:
        self.pid = pid
        self.conn = conn
        self.parent = os.getpid()
        self._exited = False

    def grow(self, target: Callable[..., None], *args: Any) -> Connection:
        """Run ``target(conn, *args)`` in the seed; its end of the pipe is ``conn``.

        Returns this end of the pipe, which ``target`` then talks to.
        """
        self.conn.send((target, args))
        return self.conn

    def is_alive(self) -> bool:
        """True until the process has ended (and then been reaped here)."""
        if self._exited:
            return False
        try:
            pid, _ = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:  # reaped already (SIGCHLD ignored by the host)
            pid = self.pid
        if pid == self.pid:
            self._exited = True
        return not self._exited

    def join(self, timeout: float | None = None) -> None:
        """Wait until the process has ended, at most ``timeout`` seconds."""
        deadline = time.monotonic() + (timeout if timeout is not None else 1e9)
        while self.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)

    def kill(self) -> None:
        """SIGKILL the process."""
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def plant() -> bool:
    """Fork the seed of this process, if it is safe to fork now; True if it was.

    Safe means: called from the main thread while no other thread runs
    (the app's import in a gunicorn or uvicorn worker, under ``pygeoapi
    serve``, or right after gunicorn ``--preload`` forked the worker), but
    those known to hold no lock (:data:`_HARMLESS_TARGETS`). Once per
    process; the pool spawns its template when there is no seed.
    """
    global _SEED, _IN_SEED
    with _PLANT_LOCK:
        if _SEED is not None and _SEED.parent == os.getpid():
            return True
        if threading.current_thread() is not threading.main_thread():
            return False
        if _IN_SEED or not all(_harmless(thread) for thread in threading.enumerate()):
            return False
        ours, theirs = multiprocessing.Pipe()
        gc.collect()
        gc.freeze()
        _IN_SEED = True
        try:
            pid = os.fork()
        except OSError as exc:
            _IN_SEED = False
            ours.close()
            theirs.close()
            logger.warning("could not fork the local pool's template: %s; it is spawned", exc)
            return False
        if pid == 0:
            ours.close()
            _wait(theirs)  # never returns
        _IN_SEED = False
        theirs.close()
        _SEED = Seed(pid, ours)
        logger.debug("forked the local pool's template seed, pid %s", pid)
        return True


#: Threads that may run while the seed is forked: (module, qualified name) of
#: their target. They hold no lock the seed could need (the only risk of a
#: fork beside threads), and do not exist in it.
_HARMLESS_TARGETS = {
    # uvicorn --workers: each worker answers its supervisor's pings, blocked
    # in a pipe read (uvicorn/supervisors/multiprocess.py).
    ("uvicorn.supervisors.multiprocess", "Process.always_pong"),
}


def _harmless(thread: threading.Thread) -> bool:
    if thread is threading.current_thread():
        return True
    target = getattr(thread, "_target", None)
    return (getattr(target, "__module__", None), getattr(target, "__qualname__", None)) in (
        _HARMLESS_TARGETS
    )


def take() -> Seed | None:
    """This process's seed, once: None if it has none (or it was taken, or died)."""
    global _SEED
    with _PLANT_LOCK:
        seed, _SEED = _SEED, None
    if seed is None or seed.parent != os.getpid() or not seed.is_alive():
        return None
    return seed


def _wait(conn: Connection) -> None:
    # In the seed: become quiet, wait for what to run, run it, end without the server's exit.
    code = 0
    try:
        _quiet(conn)
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the server ended without needing a template
            os._exit(0)
        target, args = message
        target(conn, *args)
    except BaseException:  # noqa: BLE001 - the server sees the pipe close
        logger.exception("the local pool's template ended in error")
        code = 1
    finally:
        os._exit(code)


def name_process(name: str) -> None:
    """Set this process's command name (Linux; elsewhere nothing)."""
    try:
        with open("/proc/self/comm", "w") as comm:
            comm.write(name)
    except OSError:
        pass


def _quiet(conn: Connection) -> None:
    name_process(NAME)
    signal.set_wakeup_fd(-1)
    for signum in signal.valid_signals():
        try:
            if callable(signal.getsignal(signum)):
                signal.signal(signum, signal.SIG_DFL)
        except (OSError, ValueError):
            continue
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _close_listeners(keep=conn.fileno())


def _close_listeners(keep: int) -> None:
    # Point each inherited listening socket at /dev/null: the server's port
    # must be free once the server has gone, whatever its jobs still run.
    # (The socket objects stay, unused; closing their descriptors outright
    # would let a later open reuse the numbers under them.)
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return
    null = os.open(os.devnull, os.O_RDWR)
    try:
        for fd in fds:
            if fd in (keep, null) or fd <= 2:
                continue
            try:
                if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                    continue
                probe = socket.socket(fileno=os.dup(fd))
                try:
                    listening = probe.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
                finally:
                    probe.close()
                if listening:
                    os.dup2(null, fd)
            except OSError:
                continue
    finally:
        os.close(null)
