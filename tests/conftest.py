"""Real servers for the tests: one Prefect server, and pygeoapi servers over HTTP."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pygeoapi_prefect.prefect.api import PrefectAPI
from pygeoapi_prefect.prefect.server import PrefectServer, free_port

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent

STANDARD_PROCESSES: dict[str, str | dict[str, Any]] = {
    "hello-world": "HelloWorld",
    "echo": "Echo",
    "sleep": "pygeoapi_test_processes.SleepProcessor",
    "fail": "pygeoapi_test_processes.FailProcessor",
    "job-id": "pygeoapi_test_processes.JobIdProcessor",
    "bytes": "pygeoapi_test_processes.BytesProcessor",
    "async-only": "pygeoapi_test_processes.AsyncOnlyProcessor",
    "spawning": "pygeoapi_test_processes.SpawningProcessor",
    "progress": "pygeoapi_test_processes.ProgressProcessor",
    "big": "pygeoapi_test_processes.BigProcessor",
    "chatty": "pygeoapi_test_processes.ChattyProcessor",
    "hi-prefect-world": {
        "name": "pygeoapi_prefect.processes.FlowProcessor",
        "flow": "pygeoapi_prefect.examples.hi_prefect_world:hi_prefect_world",
        "metadata": {"title": "Hi, Prefect world"},
    },
}


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """A real Prefect server on a free loopback port, with its own PREFECT_HOME."""
    home = tmp_path_factory.mktemp("prefect-home")
    server = PrefectServer(home, port=free_port())
    server.start(timeout=120)
    try:
        yield server
    finally:
        server.stop()


@dataclass
class S3:
    """A real S3-compatible HTTP server (moto's) on loopback, with one bucket."""

    endpoint: str
    bucket: str

    @property
    def storage_options(self) -> dict[str, Any]:
        return {"client_kwargs": {"endpoint_url": self.endpoint}}


#: Test credentials, given the standard AWS way (environment), never in YAML.
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "pygeoapi-prefect-test",
    "AWS_SECRET_ACCESS_KEY": "pygeoapi-prefect-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="session")
def s3() -> Iterator[S3]:
    from moto.server import ThreadedMotoServer

    os.environ.update(S3_ENV)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        import s3fs

        s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}).mkdir("pygeoapi-test")
        yield S3(endpoint, "pygeoapi-test")
    finally:
        server.stop()


@pytest.fixture(scope="session")
def prefect_api(prefect_server: PrefectServer) -> PrefectAPI:
    return PrefectAPI(prefect_server.api_url, timeout=10)


@dataclass
class Pygeoapi:
    """A running ``pygeoapi-prefect serve`` subprocess."""

    base_url: str
    config_path: Path
    results_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.base_url, timeout=30)

    def execute(
        self, process_id: str, inputs: dict[str, Any], *, asynchronous: bool = False, **body: Any
    ) -> httpx.Response:
        headers = {"Prefer": "respond-async"} if asynchronous else {}
        return self.client.post(
            f"/processes/{process_id}/execution", json={"inputs": inputs, **body}, headers=headers
        )

    def job(self, job_id: str) -> httpx.Response:
        return self.client.get(f"/jobs/{job_id}", params={"f": "json"})

    def wait_for(self, job_id: str, *statuses: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            document = self.job(job_id).json()
            if document.get("status") in statuses:
                return document
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} never reached {statuses}: {document}")
            time.sleep(0.05)

    def raw(self, method: str, path: str) -> tuple[int, str, bytes]:
        """(status, Content-Type, body) of a request sent with ``path`` exactly as written.

        http.client leaves the path alone; httpx would normalise it.
        """
        host, port = self.base_url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            connection.request(method, path)
            answer = connection.getresponse()
            return answer.status, answer.getheader("Content-Type") or "", answer.read()
        finally:
            connection.close()

    def started(self, timeout: float) -> Pygeoapi:
        """Wait until it answers; stop it and raise with its log if it does not."""
        try:
            wait_serving(self.process, self.base_url, self.log_path, timeout)
        except RuntimeError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def pygeoapi_config(
    port: int,
    results_dir: Path,
    *,
    processes: dict[str, str | dict[str, Any]] | None = None,
    manager: dict[str, Any] | None = None,
    max_items: int = 200,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A minimal pygeoapi config using PrefectManager (``extra``: more top-level blocks)."""
    config = yaml.safe_load((ROOT / "example-config.yml").read_text())
    config["server"]["bind"] = {"host": "127.0.0.1", "port": port}
    config["server"]["url"] = f"http://127.0.0.1:{port}"
    config["server"]["pretty_print"] = False
    config["server"]["limits"] = {"default_items": 10, "max_items": max_items}
    config["server"]["manager"] = {
        "name": "pygeoapi_prefect.manager.PrefectManager",
        "results": {"url": str(results_dir)},
        **(manager or {}),
    }
    config["resources"] = {
        pid: {"type": "process", "processor": name if isinstance(name, dict) else {"name": name}}
        for pid, name in (processes or STANDARD_PROCESSES).items()
    }
    config.update(extra or {})
    return config


def server_env(prefect_api_url: str | None, home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PREFECT_HOME"] = str(home)
    env.pop("PREFECT_API_URL", None)
    env.update(S3_ENV)
    if prefect_api_url:
        env["PREFECT_API_URL"] = prefect_api_url
    return env


def start_pygeoapi(
    tmp: Path,
    prefect_api_url: str | None,
    *,
    processes: dict[str, str | dict[str, Any]] | None = None,
    manager: dict[str, Any] | None = None,
    max_items: int = 200,
    timeout: float = 60,
    workers: int = 1,
    extra: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> Pygeoapi:
    """Write a config into ``tmp`` and serve it with ``pygeoapi-prefect serve``.

    ``workers`` gunicorn workers serve it. One by default: several tests count
    on one process (``local.max_workers`` is per worker; the fault tests find
    the job processes under it); the shared ``pygeoapi`` fixture has two.
    ``env``: more environment variables (or other values) for the server.
    """
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    results_dir = tmp / "results"
    config_path = tmp / "pygeoapi-config.yml"
    config_path.write_text(
        yaml.safe_dump(
            pygeoapi_config(
                port,
                results_dir,
                processes=processes,
                manager=manager,
                max_items=max_items,
                extra=extra,
            )
        )
    )
    log_path = tmp / "pygeoapi.log"
    more_env = env or {}
    env = server_env(prefect_api_url, tmp / "prefect-home")
    env.update(more_env)
    process = spawn_serve(config_path, port, tmp, env, log_path, workers=workers)
    server = Pygeoapi(f"http://127.0.0.1:{port}", config_path, results_dir, process, log_path)
    return server.started(timeout)


def spawn_serve(
    config_path: Path,
    port: int | None,
    cwd: Path,
    env: dict[str, str],
    log_path: Path,
    *extra: str,
    workers: int = 1,
) -> subprocess.Popen[bytes]:
    """Start ``pygeoapi-prefect serve`` in a subprocess, its output into ``log_path``.

    ``port`` None leaves it to the config (``server.bind.port``).
    """
    command = [sys.executable, "-m", "pygeoapi_prefect.cli", "serve"]
    command += ["--config", str(config_path), "--workers", str(workers)]
    command += ["--port", str(port)] if port is not None else []
    command += extra
    with log_path.open("wb") as log:
        return subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def wait_serving(
    process: subprocess.Popen[bytes], base_url: str, log_path: Path, timeout: float
) -> None:
    """Wait until pygeoapi answers /processes; raise with its log if it does not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"pygeoapi exited: {log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base_url}/processes", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"pygeoapi did not start: {log_path.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def pygeoapi(
    prefect_server: PrefectServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pygeoapi]:
    """The pygeoapi server most tests share, with every test process; two gunicorn workers."""
    server = start_pygeoapi(tmp_path_factory.mktemp("pygeoapi"), prefect_server.api_url, workers=2)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pygeoapi_factory(
    prefect_server: PrefectServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """Start extra pygeoapi servers with their own config; stopped after the test."""
    started: list[Pygeoapi] = []

    def factory(*, prefect_api_url: str | None = "default", **kwargs: Any) -> Pygeoapi:
        url = prefect_server.api_url if prefect_api_url == "default" else prefect_api_url
        server = start_pygeoapi(tmp_path_factory.mktemp("pygeoapi-extra"), url, **kwargs)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


# PostgreSQL, Prefect on it, and the scale-out set-up (tests/postgres.py, tests/scale_out.py).
from postgres import postgres, prefect_on_postgres  # noqa: E402, F401
from scale_out import scale_out  # noqa: E402, F401
