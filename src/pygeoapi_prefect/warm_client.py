"""The flow-run command of a warm worker: hands the run to the warm server.

A Prefect process worker starts ``python -m pygeoapi_prefect.warm_client`` for
each flow run (the deployment's ``command`` job variable). This process
imports nothing heavy: it passes its environment, working directory and
output streams to the warm server (``pygeoapi-prefect warm-worker``), whose
pre-imported interpreter forks the run, and waits for its exit code. Killing
this process (a cancellation) makes the server kill the run.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys

SOCKET_ENV = "PYGEOAPI_PREFECT_WARM_SOCKET"


def main() -> int:
    """Run the flow run named in the environment on the warm server; its exit code."""
    path = os.environ.get(SOCKET_ENV)
    if not path:
        print(
            f"{SOCKET_ENV} is not set: start the worker with pygeoapi-prefect warm-worker",
            file=sys.stderr,
        )
        return 2
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(path)
    except OSError as exc:
        sys.stderr.write(f"the warm server at {path} does not answer: {exc}\n")
        return 2
    request = json.dumps({"env": dict(os.environ), "cwd": os.getcwd(), "argv": sys.argv[1:]})
    payload = request.encode()
    socket.send_fds(connection, [struct.pack("!I", len(payload)) + payload], [1, 2])
    # A cancellation stops us: the server sees the socket close, sends the run
    # SIGTERM and, after a grace period, SIGKILL.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(143))
    answer = b""
    while len(answer) < 4:
        chunk = connection.recv(4 - len(answer))
        if not chunk:
            return 1
        answer += chunk
    return int(struct.unpack("!i", answer)[0])


if __name__ == "__main__":
    sys.exit(main())
