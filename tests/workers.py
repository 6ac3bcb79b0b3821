"""Real Prefect process workers for the tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import server_env


def start_process_worker(
    prefect_api_url: str, pool: str, folder: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`prefect worker start --pool POOL --type process` in its own session.

    It polls every second, runs in ``folder`` and writes ``folder/worker.log``;
    ``env`` adds to its environment.
    """
    environment = server_env(prefect_api_url, folder / "prefect-home")
    environment["PREFECT_WORKER_QUERY_SECONDS"] = "1"
    environment |= env or {}
    command = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool]
    with (folder / "worker.log").open("wb") as log:
        return subprocess.Popen(
            [*command, "--type", "process"],
            env=environment,
            cwd=folder,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
