"""A warm worker: flow runs start from a pre-imported interpreter, by fork.

A Prefect process worker starts a new Python process per flow run, and
importing Prefect, pygeoapi and the process's code takes seconds of each
run. ``pygeoapi-prefect warm-worker`` runs a standard ``prefect worker`` next
to a small fork server that has imported all that once: the worker's
per-run command (:mod:`pygeoapi_prefect.warm_client`) only connects to the
server, which forks a child that runs the flow run exactly as ``python -m
prefect.engine`` would (same environment, working directory and output
streams). The run stays a normal worker run: Prefect's cancellation kills
the client, and the server then kills the run's process group.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import socket
import stat
import struct
import time
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["PRELOAD", "serve"]

#: Imported once by the server, so that forked runs start at once.
PRELOAD = (
    "prefect",
    "prefect.engine",
    "prefect.flow_engine",
    "prefect.deployments.steps",
    "pygeoapi.plugin",
    "pygeoapi_prefect.deployed",
    "fsspec",
)


def _preload(modules: tuple[str, ...]) -> None:
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            logger.warning("warm server could not preload %s", name)


def _read_request(connection: socket.socket) -> tuple[dict[str, Any], list[int]]:
    message, fds, _, _ = socket.recv_fds(connection, 1 << 20, 2)
    (length,) = struct.unpack("!I", message[:4])
    data = message[4:]
    while len(data) < length:
        chunk = connection.recv(length - len(data))
        if not chunk:
            raise ConnectionError("the client went away")
        data += chunk
    return json.loads(data), list(fds)


def _exit(code: int) -> None:
    # os._exit skips the exit-time work Prefect registers (flushing queued
    # logs and events): run it, and flush our streams, first.
    import atexit
    import sys
    import threading

    try:
        threading._shutdown()  # type: ignore[attr-defined]
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def _run_flow_run(request: dict[str, Any], fds: list[int]) -> None:
    # In the forked child: become what `python -m prefect.engine` would be.
    os.setsid()
    os.dup2(fds[0], 1)
    os.dup2(fds[1], 2)
    for fd in fds:
        os.close(fd)
    os.environ.clear()
    os.environ.update(request["env"])
    import runpy
    import sys
    import traceback

    code = 1
    try:
        os.chdir(request["cwd"])
        # Prefect read its settings at import, in the server: read them again
        # from this run's environment (API URL, key, logging...).
        from prefect.context import refresh_global_settings_context
        from prefect.logging.configuration import setup_logging

        refresh_global_settings_context()
        setup_logging(incremental=False)
        import prefect.engine

        sys.argv = [prefect.engine.__file__, *request.get("argv", [])]
        # The engine module's own `__main__` block, on the preloaded modules.
        runpy.run_path(prefect.engine.__file__, run_name="__main__")
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - reported on the run's stderr
        traceback.print_exc()
    _exit(code)


#: Seconds a cancelled run gets to end after SIGTERM, before SIGKILL.
_GRACE_SECONDS = 10.0


def _stop(pid: int) -> None:
    # Prefect cancels with SIGTERM (the run's finally blocks run), then kills.
    for sig, wait in ((signal.SIGTERM, _GRACE_SECONDS), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return
            time.sleep(0.05)


def _handle(connection: socket.socket) -> None:
    # In a forked handler: start the run, watch the client, report the exit code.
    request, fds = _read_request(connection)
    pid = os.fork()
    if pid == 0:
        connection.close()
        _run_flow_run(request, fds)
    for fd in fds:
        os.close(fd)
    code = 1
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            break
        readable, _, _ = select.select([connection], [], [], 0.1)
        if readable and not connection.recv(1, socket.MSG_PEEK):
            # The client was stopped (a cancellation): so is the run.
            _stop(pid)
            os._exit(0)
    try:
        connection.sendall(struct.pack("!i", code))
    except OSError:
        pass
    os._exit(0)


def serve(path: str, *, preload: tuple[str, ...] = PRELOAD) -> None:
    """Serve forked flow runs on the Unix socket ``path`` until interrupted."""
    _preload(preload)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # handlers are reaped automatically
    if os.path.exists(path):
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            raise FileExistsError(f"{path} exists and is not a socket")
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    previous = os.umask(0o177)  # only this user may hand runs to the server
    try:
        server.bind(path)
    finally:
        os.umask(previous)
    server.listen(64)
    logger.info("warm server listening on %s", path)
    try:
        while True:
            connection, _ = server.accept()
            if os.fork() == 0:
                server.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                try:
                    _handle(connection)
                finally:
                    os._exit(1)
            connection.close()
    finally:
        server.close()
        if os.path.exists(path):
            os.unlink(path)
