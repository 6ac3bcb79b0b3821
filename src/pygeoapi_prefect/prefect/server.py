"""Starting and stopping a local Prefect server (for the demo and the tests)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

logger = logging.getLogger(__name__)

__all__ = [
    "UNUSED_SERVICES",
    "PrefectServer",
    "free_port",
    "prefect_answers",
    "stop_process_group",
]

#: Prefect server services that running jobs of pygeoapi-prefect (local or
#: deployed) do not need: event storage and automations, schedules, late-run
#: marking, worker health, pause expiry, lease clean-up. Their background work
#: competes with API requests on a small machine (benchmarks/README.md
#: measures it); the task run recorder stays, as deployed flows report task
#: runs through it. Without event storage and automations there is no zombie
#: automation and no job watcher (``server.manager.watch``): for benchmarks.
UNUSED_SERVICES = (
    "event_persister",
    "event_logger",
    "triggers",
    "scheduler",
    "late_runs",
    "foreman",
    "cancellation_cleanup",
    "pause_expirations",
    "repossessor",
)


def stop_process_group(
    process: subprocess.Popen[bytes],
    *,
    sig: signal.Signals = signal.SIGTERM,
    timeout: float = 15.0,
) -> None:
    """Stop a process started with ``start_new_session=True``, and its children.

    Sends ``sig`` to its process group, waits ``timeout`` seconds for it to
    end, then kills the group.
    """
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, sig)
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)
    except ProcessLookupError:
        pass


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def prefect_answers(api_url: str, timeout: float = 2.0) -> bool:
    """Whether a Prefect API answers its health check at ``api_url``."""
    try:
        response = httpx.get(f"{api_url.rstrip('/')}/health", timeout=timeout)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


class PrefectServer:
    """A ``prefect server start`` subprocess with its own PREFECT_HOME.

    Example::

        with PrefectServer(Path(".prefect-home"), port=4200) as server:
            print(server.api_url)

    Args:
        home: PREFECT_HOME of the server (its SQLite database lives there).
        host: address to bind; loopback by default.
        port: port to bind.
        log_file: where the server's output goes (default: ``home/server.log``).
        database_url: SQLAlchemy URL of the server's database, e.g.
            ``postgresql+asyncpg://prefect:secret@db:5432/prefect`` (default: SQLite
            in ``home/prefect.db``; SQLite serialises writes, PostgreSQL is for
            several pygeoapi instances and workers, see docs/scale-out.md).
        disabled_services: Prefect server services not to run (names as in
            ``PREFECT_SERVER_SERVICES_<NAME>_ENABLED``, e.g. ``UNUSED_SERVICES``);
            by default all run.
        auth_string: ``user:password`` to start the server with basic
            authentication on (``PREFECT_SERVER_API_AUTH_STRING``): every API
            request but ``GET /health`` and ``/ready`` then needs it, and
            clients send it from ``PREFECT_API_AUTH_STRING``
            (:meth:`client_environment`). By default the caller's
            ``PREFECT_SERVER_API_AUTH_STRING``, if any, applies.

    """

    def __repr__(self) -> str:
        # Never the auth string: a repr ends up in logs and test reports.
        auth = ", basic auth on" if self.auth_string else ""
        return f"PrefectServer({self.api_url!r}{auth})"

    def __init__(
        self,
        home: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 4200,
        log_file: Path | None = None,
        database_url: str | None = None,
        disabled_services: tuple[str, ...] = (),
        auth_string: str | None = None,
    ) -> None:
        self.home = Path(home).resolve()
        self.host = host
        self.port = port
        self.log_file = log_file or self.home / "server.log"
        self.database_url = database_url or f"sqlite+aiosqlite:///{self.home / 'prefect.db'}"
        self.disabled_services = disabled_services
        if auth_string is not None and ":" not in auth_string:
            raise ValueError("auth_string must be user:password")
        self.auth_string = auth_string
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def api_url(self) -> str:
        """The server's API URL."""
        return f"http://{self.host}:{self.port}/api"

    @property
    def ui_url(self) -> str:
        """The server's UI URL."""
        return f"http://{self.host}:{self.port}"

    def environment(self) -> dict[str, str]:
        """The environment the server runs with."""
        env = dict(os.environ)
        env.pop("PREFECT_API_URL", None)
        env |= {
            "PREFECT_HOME": str(self.home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
            "PREFECT_API_DATABASE_CONNECTION_URL": self.database_url,
            "PREFECT_UI_API_URL": self.api_url,
        }
        for service in self.disabled_services:
            env[f"PREFECT_SERVER_SERVICES_{service.upper()}_ENABLED"] = "false"
        if self.auth_string is not None:
            env["PREFECT_SERVER_API_AUTH_STRING"] = self.auth_string
        return env

    def client_environment(self) -> dict[str, str]:
        """What a client of this server needs in its environment: the API URL and credentials.

        For the manager (``pygeoapi-prefect serve``), workers and the CLI alike.
        """
        env = {"PREFECT_API_URL": self.api_url}
        if self.auth_string is not None:
            env["PREFECT_API_AUTH_STRING"] = self.auth_string
        return env

    def start(
        self,
        *,
        timeout: float = 90.0,
        waiting: Callable[[float], None] | None = None,
        every: float = 5.0,
    ) -> None:
        """Start the server and wait until its API answers.

        ``waiting`` is called with the seconds waited so far, every ``every``
        seconds while the API does not answer yet (the CLI shows progress).
        """
        self.home.mkdir(parents=True, exist_ok=True)
        log = open(self.log_file, "ab")  # noqa: SIM115 - owned by the subprocess
        command = [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            self.host,
            "--port",
            str(self.port),
        ]
        logger.info(
            "starting a Prefect server on %s (PREFECT_HOME=%s%s)",
            self.ui_url,
            self.home,
            ", basic auth on" if self.auth_string else "",
        )
        self.process = subprocess.Popen(
            command,
            env=self.environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        started = time.monotonic()
        deadline = started + timeout
        told = started
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the Prefect server exited with code {self.process.returncode}; "
                    f"see {self.log_file}"
                )
            if prefect_answers(self.api_url, timeout=1.0):
                return
            if waiting is not None and time.monotonic() - told >= every:
                told = time.monotonic()
                waiting(told - started)
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(
            f"the Prefect server did not answer within {timeout:.0f} s; see {self.log_file}"
        )

    def stop(self, *, timeout: float = 15.0) -> None:
        """Stop the server and everything it started."""
        if self.process is not None:
            stop_process_group(self.process, timeout=timeout)

    def __enter__(self) -> PrefectServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
