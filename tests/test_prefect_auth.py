"""Prefect behind auth: basic auth on a self-hosted server, a bearer key through a gateway.

One Prefect server of this module's own runs with
``PREFECT_SERVER_API_AUTH_STRING`` (basic auth). In front of it, a real HTTP
gateway (:mod:`bearer_proxy`) admits only ``Authorization: Bearer <key>``,
which is what ``PREFECT_API_KEY`` sends (self-hosted Prefect checks no keys,
Prefect Cloud does). Against both: pygeoapi (``serve``, real HTTP) with sync,
async and deployed jobs and the job list, a Prefect process worker, a warm
worker, and the ``deploy-process-as-flow`` and ``doctor`` commands. Wrong
credentials give errors that name the setting, and no password, key or
basic-auth token shows anywhere a person or a client could read it.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from bearer_proxy import BearerProxy
from conftest import Pygeoapi, pygeoapi_config, server_env, spawn_serve
from workers import start_process_worker

from pygeoapi_prefect.prefect.server import (
    UNUSED_SERVICES,
    PrefectServer,
    free_port,
    stop_process_group,
)

PASSWORD = "pw-" + secrets.token_hex(12)
AUTH = f"pygeoapi:{PASSWORD}"
#: What a basic-auth header would carry: must not show either.
TOKEN = base64.b64encode(AUTH.encode()).decode()
KEY = "pnu_" + secrets.token_hex(16)
WRONG = "wrong-" + secrets.token_hex(8)
SECRETS = (PASSWORD, TOKEN, KEY, WRONG, base64.b64encode(f"pygeoapi:{WRONG}".encode()).decode())

POOL, WARM_POOL = "auth-pool", "auth-warm-pool"
PROCESSES: dict[str, str | dict[str, Any]] = {
    "hello-world": "HelloWorld",
    "progress": "pygeoapi_test_processes.ProgressProcessor",
    "deployed-hello": "HelloWorld",
    "warm-hello": "HelloWorld",
}
DEPLOYMENTS = {"deployed-hello": "deployed-hello/auth", "warm-hello": "warm-hello/warm"}


def basic_env(api_url: str, home: Path, auth: str | None = AUTH) -> dict[str, str]:
    """A client's environment for the server with basic auth (``auth`` None: no credentials)."""
    env = server_env(api_url, home)
    env.pop("PREFECT_API_KEY", None)
    env.pop("PREFECT_API_AUTH_STRING", None)
    if auth is not None:
        env["PREFECT_API_AUTH_STRING"] = auth
    return env


def bearer_env(api_url: str, home: Path, key: str = KEY) -> dict[str, str]:
    """A client's environment for the gateway: only a bearer key."""
    env = server_env(api_url, home)
    env.pop("PREFECT_API_AUTH_STRING", None)
    env["PREFECT_API_KEY"] = key
    return env


def cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pygeoapi_prefect.cli", *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def finished(process: subprocess.Popen[str], timeout: float = 180) -> tuple[int, str]:
    output, _ = process.communicate(timeout=timeout)
    return process.returncode, output


@dataclass
class World:
    """Everything this module starts, and everything it read (grepped for secrets at the end)."""

    folder: Path
    prefect: PrefectServer
    prefect_http: httpx.Client
    proxy: BearerProxy
    basic: Pygeoapi
    bearer: Pygeoapi
    logs: list[Path]
    seen: list[str] = field(default_factory=list)

    def keep_execute(self, server: Pygeoapi, *args: Any, **kwargs: Any) -> httpx.Response:
        """``server.execute``, the answer kept."""
        return self.keep(server.execute(*args, **kwargs))

    def keep(self, response: httpx.Response) -> httpx.Response:
        """Keep an answer, headers and body, for the final grep."""
        headers = "\n".join(f"{name}: {value}" for name, value in response.headers.multi_items())
        self.seen.append(f"{headers}\n\n{response.text}")
        return response

    def read(self, server: Pygeoapi, path: str, **params: Any) -> httpx.Response:
        """GET through pygeoapi; the answer is kept for the final grep."""
        return self.keep(server.client.get(path, params=params))

    def wait_for(self, server: Pygeoapi, job_id: str, status: str, timeout: float = 120) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            document = self.read(server, f"/jobs/{job_id}", f="json").json()
            if document.get("status") == status:
                return document
            assert document.get("status") not in ("failed", "dismissed"), document
            assert time.monotonic() < deadline, f"job {job_id} never got {status}: {document}"
            time.sleep(0.2)


def _started(server: Pygeoapi, timeout: float) -> Pygeoapi:
    return server.started(timeout)


def test_basic_auth_wins_over_a_key_as_in_prefects_client() -> None:
    from prefect.settings import (
        PREFECT_API_AUTH_STRING,
        PREFECT_API_KEY,
        temporary_settings,
    )

    from pygeoapi_prefect.prefect.api import authorization_header, credentials_setting

    with temporary_settings(updates={PREFECT_API_AUTH_STRING: AUTH, PREFECT_API_KEY: KEY}):
        assert credentials_setting() == "PREFECT_API_AUTH_STRING"
        assert authorization_header() == f"Basic {TOKEN}"
    with temporary_settings(
        updates={PREFECT_API_KEY: KEY}, set_defaults={PREFECT_API_AUTH_STRING: None}
    ):
        assert credentials_setting() == "PREFECT_API_KEY"
        assert authorization_header() == f"Bearer {KEY}"


def test_refusal_hints_name_the_setting_in_use() -> None:
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_KEY, temporary_settings

    from pygeoapi_prefect.prefect.api import credentials_hint

    none = {PREFECT_API_AUTH_STRING: None, PREFECT_API_KEY: None}
    with temporary_settings(set_defaults=none, restore_defaults=set(none)):
        assert credentials_hint(401).startswith("no credentials are set")
        assert "user:password in the Prefect API URL" in credentials_hint(401, url_credentials=True)
    with temporary_settings(
        updates={PREFECT_API_KEY: KEY}, set_defaults={PREFECT_API_AUTH_STRING: None}
    ):
        assert credentials_hint(401).startswith("the bearer key of PREFECT_API_KEY was refused")
        assert "not allowed" in credentials_hint(403)
    with temporary_settings(updates={PREFECT_API_AUTH_STRING: AUTH}):
        assert "PREFECT_API_AUTH_STRING were refused" in credentials_hint(401)
        assert PASSWORD not in credentials_hint(401)


def test_prefect_server_with_basic_auth_keeps_it_out_of_its_repr(tmp_path: Path) -> None:
    server = PrefectServer(tmp_path, port=4321, auth_string=AUTH)
    assert server.environment()["PREFECT_SERVER_API_AUTH_STRING"] == AUTH
    assert server.client_environment() == {
        "PREFECT_API_URL": "http://127.0.0.1:4321/api",
        "PREFECT_API_AUTH_STRING": AUTH,
    }
    assert PASSWORD not in repr(server) and "basic auth on" in repr(server)
    assert "PREFECT_API_AUTH_STRING" not in PrefectServer(tmp_path).client_environment()
    with pytest.raises(ValueError, match="user:password"):
        PrefectServer(tmp_path, auth_string="no-colon")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("prefect-auth")
    prefect = PrefectServer(
        folder / "prefect-home",
        port=free_port(),
        auth_string=AUTH,
        disabled_services=UNUSED_SERVICES,
    )
    prefect.start(timeout=150)
    started: list[subprocess.Popen[Any]] = []
    servers: list[Pygeoapi] = []
    proxy = BearerProxy(prefect.api_url, key=KEY, upstream_auth=AUTH).start()
    prefect_http = httpx.Client(base_url=prefect.api_url, auth=("pygeoapi", PASSWORD), timeout=30)
    try:
        for pool in (POOL, WARM_POOL):
            answer = prefect_http.post("/work_pools/", json={"name": pool, "type": "process"})
            assert answer.status_code == 201, answer.text
        # A Prefect worker with basic auth, and a warm worker with only the key.
        worker_dir = folder / "worker"
        worker_dir.mkdir()
        started.append(
            start_process_worker(
                prefect.api_url, POOL, worker_dir, env={"PREFECT_API_AUTH_STRING": AUTH}
            )
        )
        warm_dir = folder / "warm"
        warm_dir.mkdir()
        with (warm_dir / "warm.log").open("wb") as log:
            started.append(
                subprocess.Popen(
                    [sys.executable, "-m", "pygeoapi_prefect.cli", "warm-worker"]
                    + ["--pool", WARM_POOL, "--socket", str(warm_dir / "warm.sock")],
                    env=bearer_env(proxy.api_url, warm_dir / "prefect-home"),
                    cwd=warm_dir,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        # The CLI deploys with basic auth, and through the gateway with the key.
        deploy_dir = folder / "deploy"
        deploy_dir.mkdir()
        deploy_config = deploy_dir / "config.yml"
        deploy_config.write_text(
            yaml.safe_dump(pygeoapi_config(free_port(), folder / "results", processes=PROCESSES))
        )
        deploys = [
            cli(
                "deploy-process-as-flow",
                "deployed-hello",
                "--config",
                str(deploy_config),
                "--deployment-name",
                "auth",
                "--work-pool",
                POOL,
                env=basic_env(prefect.api_url, deploy_dir / "home"),
                cwd=deploy_dir,
            ),
            cli(
                "deploy-process-as-flow",
                "warm-hello",
                "--config",
                str(deploy_config),
                "--deployment-name",
                "warm",
                "--work-pool",
                WARM_POOL,
                "--warm",
                env=bearer_env(proxy.api_url, deploy_dir / "home"),
                cwd=deploy_dir,
            ),
        ]
        # pygeoapi with basic auth, and pygeoapi through the gateway with the key.
        processes = {
            pid: {"name": name, "deployment": DEPLOYMENTS[pid]} if pid in DEPLOYMENTS else name
            for pid, name in PROCESSES.items()
        }
        for name, env_of in (("basic", basic_env), ("bearer", bearer_env)):
            tmp = folder / name
            tmp.mkdir()
            port = free_port()
            config_path = tmp / "pygeoapi-config.yml"
            manager = {"results": {"url": str(folder / "results")}, "local": {"max_workers": 1}}
            config = pygeoapi_config(port, folder / "results", processes=processes, manager=manager)
            # DEBUG: httpx and httpcore log every request; no header may show.
            config["logging"] = {"level": "DEBUG"}
            config_path.write_text(yaml.safe_dump(config))
            api_url = prefect.api_url if name == "basic" else proxy.api_url
            env = env_of(api_url, tmp / "prefect-home")
            log_path = tmp / "pygeoapi.log"
            process = spawn_serve(config_path, port, tmp, env, log_path)
            servers.append(
                Pygeoapi(
                    f"http://127.0.0.1:{port}", config_path, folder / "results", process, log_path
                )
            )
        outputs = [finished(process) for process in deploys]
        for code, output in outputs:
            assert code == 0, output
        (folder / "deploy.out").write_text("\n".join(output for _, output in outputs))
        basic, bearer = (_started(server, 120) for server in servers)
        logs = [
            folder / "deploy.out",
            worker_dir / "worker.log",
            warm_dir / "warm.log",
            basic.log_path,
            bearer.log_path,
        ]
        yield World(folder, prefect, prefect_http, proxy, basic, bearer, logs)
    finally:
        # All at once: each takes seconds to stop gracefully.
        with ThreadPoolExecutor() as pool:
            stops = [pool.submit(server.stop) for server in servers]
            stops += [pool.submit(stop_process_group, p, timeout=20) for p in started]
            for stop in stops:
                stop.result()
        prefect_http.close()
        proxy.stop()
        prefect.stop()


def test_auth_is_really_on(world: World) -> None:
    api_url = world.prefect.api_url
    assert httpx.post(f"{api_url}/flow_runs/filter", json={}).status_code == 401
    wrong = httpx.post(f"{api_url}/flow_runs/filter", json={}, auth=("pygeoapi", WRONG))
    assert wrong.status_code == 401
    # Prefect leaves its health probe open (load balancers), nothing else.
    assert httpx.get(f"{api_url}/health").status_code == 200
    assert world.prefect_http.post("/flow_runs/filter", json={}).status_code == 200
    # The gateway: no key, another key, or the basic credentials: all refused.
    gateway = world.proxy.api_url
    for headers in ({}, {"Authorization": f"Bearer {WRONG}"}, {"Authorization": f"Basic {TOKEN}"}):
        assert (
            httpx.post(f"{gateway}/flow_runs/filter", json={}, headers=headers).status_code == 401
        )
    ok = httpx.post(
        f"{gateway}/flow_runs/filter", json={}, headers={"Authorization": f"Bearer {KEY}"}
    )
    assert ok.status_code == 200


@pytest.mark.parametrize("name", ["basic", "bearer"])
def test_sync_async_jobs_and_the_job_list(world: World, name: str) -> None:
    server: Pygeoapi = getattr(world, name)
    forwarded = world.proxy.forwarded
    sync = world.keep_execute(server, "hello-world", {"name": name}, response="document")
    assert sync.status_code == 200, sync.text
    assert sync.json() == {"echo": f"Hello {name}!"}
    sync_id = sync.headers["Location"].rstrip("/").rsplit("/", 1)[-1]
    accepted = world.keep_execute(
        server, "hello-world", {"name": f"{name} async"}, asynchronous=True
    )
    assert accepted.status_code == 201, accepted.text
    job_id = accepted.json()["jobID"]
    document = world.wait_for(server, job_id, "successful")
    results = world.read(server, f"/jobs/{job_id}/results", f="json")
    assert results.json() == {"id": "echo", "value": f"Hello {name} async!"}
    ui = [link["href"] for link in document["links"] if "/runs/flow-run/" in link["href"]]
    assert ui and "@" not in ui[0]
    listed = {
        job["jobID"] for job in world.read(server, "/jobs", f="json", limit=50).json()["jobs"]
    }
    assert {sync_id, job_id} <= listed
    page = world.read(server, f"/jobs/{job_id}", f="html")
    assert page.status_code == 200 and job_id in page.text
    # The jobs are flow runs on the server behind the auth.
    run = world.prefect_http.get(f"/flow_runs/{job_id}").json()
    assert run["state_type"] == "COMPLETED"
    if name == "bearer":
        assert world.proxy.forwarded > forwarded  # it went through the gateway


@pytest.mark.parametrize("name", ["basic", "bearer"])
def test_job_processes_report_progress_under_auth(world: World, name: str) -> None:
    """The local pool's job process talks to Prefect itself (progress labels, heartbeats)."""
    server: Pygeoapi = getattr(world, name)
    accepted = world.keep_execute(server, "progress", {"seconds": 4}, asynchronous=True)
    assert accepted.status_code == 201, accepted.text
    job_id = accepted.json()["jobID"]
    seen = set()
    deadline = time.monotonic() + 120
    while (document := world.read(server, f"/jobs/{job_id}", f="json").json())[
        "status"
    ] != "successful":
        assert document["status"] in ("accepted", "running"), document
        assert time.monotonic() < deadline, document
        seen.add((document.get("progress"), document.get("message")))
        time.sleep(0.1)
    assert (50, "halfway there") in seen


@pytest.mark.parametrize(
    ("name", "process_id"), [("basic", "deployed-hello"), ("bearer", "warm-hello")]
)
def test_deployed_processes_run_on_workers_under_auth(
    world: World, name: str, process_id: str
) -> None:
    """The CLI's deployments, run by a Prefect worker (basic) and a warm worker (key)."""
    server: Pygeoapi = getattr(world, name)
    accepted = world.keep_execute(server, process_id, {"name": process_id}, asynchronous=True)
    assert accepted.status_code == 201, accepted.text
    job_id = accepted.json()["jobID"]
    world.wait_for(server, job_id, "successful", timeout=180)
    results = world.read(server, f"/jobs/{job_id}/results", f="json")
    assert results.json() == {"id": "echo", "value": f"Hello {process_id}!"}
    run = world.prefect_http.get(f"/flow_runs/{job_id}").json()
    deployment = world.prefect_http.get(f"/deployments/{run['deployment_id']}").json()
    assert deployment["work_pool_name"] == (POOL if name == "basic" else WARM_POOL)
    assert deployment["job_variables"] == (
        {} if name == "basic" else {"command": "python -m pygeoapi_prefect.warm_client"}
    )
    # What the flow run was given: the job's inputs, our labels; nothing else.
    assert run["parameters"]["inputs"] == {"name": process_id}
    assert run["labels"]["pygeoapi.jobs_url"] == f"{server.base_url}/jobs"


def test_doctor_passes_with_either_credential(world: World) -> None:
    config = str(world.basic.config_path)
    runs = {
        "PREFECT_API_AUTH_STRING": cli(
            "doctor",
            "--config",
            config,
            "--pool",
            POOL,
            env=basic_env(world.prefect.api_url, world.folder / "doctor-home"),
            cwd=world.folder,
        ),
        "PREFECT_API_KEY": cli(
            "doctor",
            "--config",
            config,
            "--pool",
            WARM_POOL,
            env=bearer_env(world.proxy.api_url, world.folder / "doctor-home"),
            cwd=world.folder,
        ),
    }
    for setting, process in runs.items():
        code, output = finished(process)
        world.seen.append(output)
        assert code == 0, output
        assert f"credentials from {setting}" in output
        assert "all good" in output


def _ogc_503(response: httpx.Response, setting: str) -> None:
    assert response.status_code == 503, response.text
    document = response.json()
    assert document["code"] == "NoApplicableCode", document
    assert setting in document["description"], document


def test_wrong_credentials_are_named_never_echoed(world: World) -> None:
    home = world.folder / "wrong-home"
    config = str(world.basic.config_path)
    api_url = world.prefect.api_url
    wrong_auth = basic_env(api_url, home, auth=f"pygeoapi:{WRONG}")
    deploy = ("deploy-process-as-flow", "deployed-hello", "--config", config)
    runs = {
        "doctor, wrong password": (
            cli("doctor", "--config", config, env=wrong_auth, cwd=world.folder),
            "PREFECT_API_AUTH_STRING were refused",
        ),
        "doctor, no credentials": (
            cli("doctor", "--config", config, env=basic_env(api_url, home, None), cwd=world.folder),
            "no credentials are set: set PREFECT_API_AUTH_STRING",
        ),
        "deploy, wrong password": (
            cli(*deploy, "--work-pool", POOL, env=wrong_auth, cwd=world.folder),
            "PREFECT_API_AUTH_STRING were refused",
        ),
        "serve, wrong password": (
            cli(
                "serve",
                "--config",
                config,
                "--port",
                str(free_port()),
                env=wrong_auth,
                cwd=world.basic.config_path.parent,
            ),
            "PREFECT_API_AUTH_STRING were refused",
        ),
    }
    for what, (process, expected) in runs.items():
        code, output = finished(process)
        world.seen.append(output)
        assert code == 1, f"{what}: {output}"
        assert expected in output, f"{what}: {output}"
        assert "Traceback" not in output, f"{what}: {output}"
        assert WRONG not in output and PASSWORD not in output, what


def test_a_wrong_password_answers_503_naming_the_setting(world: World) -> None:
    """pygeoapi under gunicorn (no `serve` checking at start), a wrong PREFECT_API_AUTH_STRING."""
    from pygeoapi_prefect.cli.main import write_openapi

    tmp = world.folder / "wrong-gunicorn"
    tmp.mkdir()
    openapi = tmp / "openapi.yml"
    write_openapi(world.basic.config_path, openapi)
    env = basic_env(world.prefect.api_url, tmp / "home", auth=f"pygeoapi:{WRONG}")
    env |= {"PYGEOAPI_CONFIG": str(world.basic.config_path), "PYGEOAPI_OPENAPI": str(openapi)}
    port = free_port()
    log_path = tmp / "gunicorn.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "pygeoapi_prefect.flask_app:APP"]
            + ["--bind", f"127.0.0.1:{port}", "--workers", "1", "--worker-class", "gthread"],
            cwd=tmp,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    world.logs.append(log_path)
    server = Pygeoapi(f"http://127.0.0.1:{port}", world.basic.config_path, tmp, process, log_path)
    try:
        server.started(120)
        answers = [
            server.client.get("/jobs", params={"f": "json"}),
            world.keep_execute(server, "hello-world", {"name": "sync"}, response="document"),
            world.keep_execute(server, "hello-world", {"name": "async"}, asynchronous=True),
        ]
    finally:
        server.client.close()
        stop_process_group(process, timeout=20)
    for answer in answers:
        world.keep(answer)
        _ogc_503(answer, "PREFECT_API_AUTH_STRING were refused")
    assert "PREFECT_API_AUTH_STRING were refused" in log_path.read_text()


def test_a_refused_key_answers_503_naming_the_setting(world: World) -> None:
    """The gateway's key rotated under a running pygeoapi: every job request says why."""
    server = world.bearer
    job_id = world.keep_execute(
        server, "hello-world", {"name": "before"}, asynchronous=True
    ).json()["jobID"]
    world.wait_for(server, job_id, "successful")
    world.proxy.key = "pnu_" + secrets.token_hex(16)
    try:
        answers = [
            server.client.get("/jobs", params={"f": "json"}),
            server.client.get(f"/jobs/{job_id}", params={"f": "json"}),
            world.keep_execute(server, "hello-world", {"name": "sync"}, response="document"),
            world.keep_execute(server, "hello-world", {"name": "async"}, asynchronous=True),
        ]
    finally:
        world.proxy.key = KEY
    for answer in answers:
        world.keep(answer)
        _ogc_503(answer, "PREFECT_API_KEY")
    # The same process, the key back: it works again (nothing cached the refusal).
    assert server.client.get("/jobs", params={"f": "json"}).status_code == 200


def _everything_recorded(world: World) -> dict[str, str]:
    # Every place a credential must never be: what clients and operators read.
    texts = {f"answer {n}": text for n, text in enumerate(world.seen)}
    for path in world.logs:
        texts[str(path)] = path.read_text(errors="replace")
    texts["prefect server log"] = world.prefect.log_file.read_text(errors="replace")
    prefect = world.prefect_http
    for name, path in (
        ("flow runs", "/flow_runs/filter"),
        ("deployments", "/deployments/filter"),
        ("flow run logs", "/logs/filter"),
        ("variables", "/variables/filter"),
        ("automations", "/automations/filter"),
        ("work pools", "/work_pools/filter"),
        ("task runs", "/task_runs/filter"),
    ):
        answer = prefect.post(path, json={"limit": 200})
        assert answer.status_code == 200, f"{path}: {answer.text}"
        texts[name] = answer.text
    for pool in (POOL, WARM_POOL):
        texts[f"workers of {pool}"] = prefect.post(
            f"/work_pools/{pool}/workers/filter", json={}
        ).text
    for folder in (world.folder / "deploy" / ".pygeoapi-prefect", world.folder / "results"):
        for path in folder.rglob("*"):
            if path.is_file():
                texts[str(path)] = path.read_text(errors="replace")
    return texts


def test_no_credential_is_recorded_anywhere(world: World) -> None:
    texts = _everything_recorded(world)
    runs = json.loads(texts["flow runs"])
    # Not an empty search: the jobs of this module, their code and logs are there.
    assert len(runs) >= 7 and any(run["deployment_id"] for run in runs)
    assert any(re.search(r"pygeoapi_deployed_hello_[0-9a-f]{12}\.py$", name) for name in texts)
    assert "Finished in state Completed" in texts["flow run logs"]
    assert sum(len(text) for text in texts.values()) > 100_000
    leaks = [
        (where, secret[:6] + "...")
        for where, text in texts.items()
        for secret in SECRETS
        if secret in text
    ]
    assert not leaks, leaks
