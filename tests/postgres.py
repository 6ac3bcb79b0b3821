"""A throw-away PostgreSQL server for the tests, and a Prefect server on it.

Uses Debian's PostgreSQL binaries (``/usr/lib/postgresql/<version>/bin``,
``apt-get install postgresql``): ``initdb`` into a temporary folder, then
``postgres`` on a free loopback port. PostgreSQL refuses to run as root, so
when the tests run as root its binaries run as the ``postgres`` user, in a
folder that user owns.

Fixtures (import them into a test module or conftest to use them):

- ``postgres``: the running server (session scope).
- ``prefect_on_postgres``: a Prefect server whose database is on it (session scope).
"""

from __future__ import annotations

import glob
import logging
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pygeoapi_prefect.prefect.server import PrefectServer, free_port, stop_process_group

logger = logging.getLogger(__name__)

__all__ = ["Postgres", "bin_dir", "postgres", "prefect_on_postgres"]

#: PostgreSQL's own service user, which Debian's package creates.
SERVICE_USER = "postgres"


def bin_dir() -> Path:
    """The newest ``/usr/lib/postgresql/<version>/bin`` that holds ``postgres``."""
    found = glob.glob("/usr/lib/postgresql/*/bin/postgres")
    if not found:
        raise RuntimeError(
            "PostgreSQL is not installed: no /usr/lib/postgresql/*/bin/postgres "
            "(apt-get install postgresql)"
        )
    newest = max(found, key=lambda path: int(Path(path).parents[1].name.split(".")[0]))
    return Path(newest).parent


class Postgres:
    """A PostgreSQL server in a temporary folder, on a loopback port.

    Args:
        database: name of the database created at start.
        port: TCP port (default: a free one).
    """

    def __init__(self, database: str = "prefect", *, port: int | None = None) -> None:
        self.database = database
        self.port = port or free_port()
        self.bin = bin_dir()
        self.folder = Path(tempfile.mkdtemp(prefix="pygeoapi-prefect-pg-"))
        self.data = self.folder / "data"
        self.log_file = self.folder / "postgres.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._as_root = os.geteuid() == 0

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the database, for Prefect (asyncpg driver)."""
        return f"postgresql+asyncpg://{SERVICE_USER}@127.0.0.1:{self.port}/{self.database}"

    def _command(self, name: str, *args: str) -> list[str]:
        command = [str(self.bin / name), *args]
        return ["runuser", "-u", SERVICE_USER, "--", *command] if self._as_root else command

    def start(self, *, timeout: float = 30.0) -> None:
        """Create the cluster, start the server, create the database."""
        if self._as_root:
            user = pwd.getpwnam(SERVICE_USER)
            os.chown(self.folder, user.pw_uid, user.pw_gid)
        subprocess.run(
            self._command(
                "initdb",
                "--pgdata",
                str(self.data),
                "--username",
                SERVICE_USER,
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--no-sync",
            ),
            check=True,
            capture_output=True,
            cwd=self.folder,
        )
        # Durability is not needed in a test: skip the fsyncs.
        settings = ["fsync=off", "synchronous_commit=off", "full_page_writes=off"]
        settings += ["listen_addresses=127.0.0.1", f"unix_socket_directories={self.folder}"]
        with self.log_file.open("wb") as log:
            self.process = subprocess.Popen(
                self._command(
                    "postgres",
                    "-D",
                    str(self.data),
                    "-p",
                    str(self.port),
                    *(arg for setting in settings for arg in ("-c", setting)),
                ),
                cwd=self.folder,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"PostgreSQL did not start: {self.log_file.read_text()[-2000:]}")
            time.sleep(0.1)
        subprocess.run(
            self._command(
                "createdb",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                SERVICE_USER,
                self.database,
            ),
            check=True,
            capture_output=True,
            cwd=self.folder,
        )
        logger.info("PostgreSQL on 127.0.0.1:%s, database %s", self.port, self.database)

    def _ready(self) -> bool:
        check = self._command("pg_isready", "-h", "127.0.0.1", "-p", str(self.port), "-q")
        return subprocess.run(check, cwd=self.folder).returncode == 0

    def stop(self, *, remove: bool = True) -> None:
        """Stop the server (fast shutdown) and remove its folder."""
        if self.process is not None:
            # runuser passes the signal on to postgres; SIGINT is its fast shutdown.
            stop_process_group(self.process, sig=signal.SIGINT, timeout=20)
        if remove:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> Postgres:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A real PostgreSQL server on a free loopback port, with an empty ``prefect`` database."""
    with Postgres() as server:
        yield server


@pytest.fixture(scope="session")
def prefect_on_postgres(
    postgres: Postgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrefectServer]:
    """A real Prefect server whose database is the ``postgres`` fixture's.

    Its log is ``server.log`` in its PREFECT_HOME (``prefect_on_postgres.log_file``).
    """
    server = PrefectServer(
        tmp_path_factory.mktemp("prefect-postgres-home"),
        port=free_port(),
        database_url=postgres.url,
    )
    server.start(timeout=120)
    try:
        yield server
    finally:
        server.stop()
