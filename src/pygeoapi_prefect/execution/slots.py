"""Job slots shared by the worker processes of one server.

Each server process (a gunicorn or uvicorn worker) has a local pool of its
own, but ``local.max_workers`` means "jobs running at once on this server":
so a job runs only while it holds one of ``max_workers`` *slots*, files in a
directory that every worker process of the server opens. A slot is held with
``fcntl.flock`` on an open file description that the pool thread opens and
passes, with the fork, to the job's own process: the slot is free again once
both have closed it, which the kernel does when a process dies, so a
SIGKILLed worker or job process never leaks a slot, and a job that outlives
its worker (it records its own end) keeps its slot until it ends. A
process's ``local.process_limits`` work the same way, with slot files of
their own.

Which processes are "the same server": those with the same parent process
(gunicorn's master, uvicorn's supervisor; its pid and start time, so a
reused pid is another server) and the same ``server.manager`` config and
pygeoapi config path; or, with ``local.pool_dir``, every process that names
that directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import random
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = ["Slot", "SlotFiles", "server_directory", "shared_gate"]

#: How often a process waiting for a turn of the server's Prefect writes tries again.
_GATE_POLL_SECONDS = 0.002

#: The folder, under the temporary directory, of the servers' slot directories.
_ROOT_NAME = "pygeoapi-prefect-slots"
_NAME = re.compile(r"^(\d+)-(\d+)-[0-9a-f]+$")


def _start_time(pid: int) -> int | None:
    # The process's start time in clock ticks since boot (field 22 of its stat).
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return int(stat.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _remove_stale(root: Path) -> None:
    # The directories of servers that are gone (their parent pid ended, or is another process now).
    try:
        entries = list(root.iterdir())
    except OSError:
        return
    for entry in entries:
        match = _NAME.match(entry.name)
        if match is None:
            continue
        pid, started = int(match.group(1)), int(match.group(2))
        if _start_time(pid) != started:
            # A job of that server may still hold a slot there: its lock
            # lives on the open file, not on the name, so removing is safe.
            shutil.rmtree(entry, ignore_errors=True)


def server_directory(identity: str) -> Path:
    """The slot directory of this server: its parent process and ``identity`` (the config).

    Example::

        server_directory(config.model_dump_json())
        # e.g. /tmp/pygeoapi-prefect-slots-0/412-9981-ab12cd34ef56ab78
    """
    parent = os.getppid()
    started = _start_time(parent) or 0
    digest = hashlib.sha256(
        f"{identity}\0{os.environ.get('PYGEOAPI_CONFIG', '')}".encode()
    ).hexdigest()[:16]
    root = Path(tempfile.gettempdir()) / f"{_ROOT_NAME}-{os.getuid()}"
    root.mkdir(mode=0o700, exist_ok=True)
    _remove_stale(root)
    return root / f"{parent}-{started}-{digest}"


class Slot:
    """One held slot: an open file locked with ``flock``, until :meth:`release`."""

    def __init__(self, name: str, fd: int) -> None:
        self.name = name
        self.fd: int | None = fd

    def __repr__(self) -> str:
        return f"Slot({self.name!r})"

    def release(self) -> None:
        """Close this process's hold (the slot is free once the job's process has ended too)."""
        fd, self.fd = self.fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


class SlotFiles:
    """``count`` slot files named ``<prefix>-<i>`` in ``directory``; :meth:`take` holds one.

    Example::

        slots = SlotFiles(Path("/run/pool"), "job", 32)
        slot = slots.take()       # None: all 32 are held, by this process or others
        ...
        slot.release()
    """

    def __init__(self, directory: Path, prefix: str, count: int) -> None:
        self.directory = directory
        self.count = count
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.paths = [directory / f"{prefix}-{index}" for index in range(count)]
        for path in self.paths:
            path.touch(exist_ok=True)

    def __repr__(self) -> str:
        return f"SlotFiles({str(self.directory)!r}, {len(self.paths)})"

    def take(self) -> Slot | None:
        """A free slot, held; None if every slot is held (never waits)."""
        # From a random start, so that the processes seldom try the same files.
        start = random.randrange(self.count)
        for index in range(self.count):
            path = self.paths[(start + index) % self.count]
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError:
                logger.warning("could not open the job slot %s", path, exc_info=True)
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            return Slot(path.name, fd)
        return None

    def held(self) -> int:
        """How many slots are held now, by any process (for tests and diagnostics)."""
        count = 0
        for path in self.paths:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                count += 1
            finally:
                os.close(fd)
        return count


def _waited_on(path: Path) -> bool:
    # Whether a writer of some process waits (it holds a shared lock on ``path``).
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def _wait_mark(path: Path) -> int:
    # Hold a shared lock on ``path`` while waiting (others only test it, for an instant).
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd


def shared_gate(files: SlotFiles) -> Callable[[float, bool], Callable[[], None] | None]:
    """A gate of ``files.count`` turns shared by processes, for :class:`PrefectAPI`'s writes.

    ``acquire(timeout, urgent)`` tries every ``_GATE_POLL_SECONDS`` (a
    Prefect write takes ten times that and more) and returns the release of
    the turn it got. While an urgent writer (creating a job's run, which a
    client waits for) of any process waits, the others let it go first; and
    a writer that finds others waiting waits one round before it tries, so
    that the process that just let go of a turn does not take the next one
    before those that waited (its next write comes at once, theirs poll).

    Example::

        acquire = shared_gate(SlotFiles(directory, "prefect-write", 1))
        release = acquire(5.0, True)   # None: no turn within 5 s
    """
    name = files.paths[0].name
    waiting_path = files.directory / f"{name}-waiting"
    urgent_path = files.directory / f"{name}-urgent"

    def acquire(timeout: float, urgent: bool) -> Callable[[], None] | None:
        deadline = time.monotonic() + timeout
        behind = _waited_on(waiting_path)
        marks = [_wait_mark(waiting_path)]
        try:
            if urgent:
                marks.append(_wait_mark(urgent_path))
            while True:
                if not behind and (urgent or not _waited_on(urgent_path)):
                    slot = files.take()
                    if slot is not None:
                        return slot.release
                behind = False
                if time.monotonic() >= deadline:
                    return None
                time.sleep(_GATE_POLL_SECONDS)
        finally:
            for fd in marks:
                os.close(fd)

    return acquire
