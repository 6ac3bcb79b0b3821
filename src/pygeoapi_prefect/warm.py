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
import struct
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


def _run_flow_run(request: dict[str, Any], fds: list[int]) -> None:
    # In the forked child: become what `python -m prefect.engine` would be.
    os.setsid()
    os.dup2(fds[0], 1)
    os.dup2(fds[1], 2)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    import runpy
    import sys

    import prefect.engine

    sys.argv = [prefect.engine.__file__, *request.get("argv", [])]
    try:
        # The engine module's own `__main__` block, on the preloaded modules.
        runpy.run_path(prefect.engine.__file__, run_name="__main__")
    except SystemExit as exc:
        os._exit(exc.code if isinstance(exc.code, int) else 1)
    os._exit(0)


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
            # The client was killed (a cancellation): so is the run.
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
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
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    os.chmod(path, 0o600)
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
