"""``pygeoapi-prefect serve``: gunicorn, server.bind, server.url, the configured Prefect API."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import click
import httpx
import pytest
import yaml
from conftest import pygeoapi_config, server_env, spawn_serve, start_pygeoapi, wait_serving
from faults import children

from pygeoapi_prefect.cli.serve import plan_serve, stop_note
from pygeoapi_prefect.config import load_config
from pygeoapi_prefect.prefect.server import free_port, prefect_answers


def write(tmp_path: Path, config: dict, name: str = "pygeoapi-config.yml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


def stop(process, log: Path) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    assert process.returncode == 0, log.read_text()[-3000:]


def test_serve_listens_on_server_bind_and_uses_the_configured_connection(
    tmp_path, prefect_server, prefect_api
):
    """No --port, no PREFECT_API_URL: server.bind.port and server.manager.connection."""
    port, idle = free_port(), free_port()
    config = pygeoapi_config(
        port, tmp_path / "results", manager={"connection": prefect_server.api_url}
    )
    log = tmp_path / "serve.log"
    env = server_env(None, tmp_path / "home")
    process = spawn_serve(
        write(tmp_path, config), None, tmp_path, env, log, "--prefect-port", str(idle)
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_serving(process, base, log, timeout=60)
        output = log.read_text()
        assert f"pygeoapi:   {base}" in output
        assert (
            f"using the Prefect API at {prefect_server.api_url} (server.manager.connection)"
            in output
        )
        assert f"Prefect UI: {prefect_server.ui_url}" in output
        assert "starting a Prefect server" not in output
        response = httpx.post(
            f"{base}/processes/hello-world/execution", json={"inputs": {"name": "c"}}, timeout=30
        )
        assert response.status_code == 200, response.text
        job_id = response.headers["Location"].rsplit("/", 1)[-1]
        assert prefect_api.read_flow_run(job_id)["state_type"] == "COMPLETED"
        assert not prefect_answers(f"http://127.0.0.1:{idle}/api", timeout=1)
        assert not (tmp_path / ".prefect-home").exists()
    finally:
        stop(process, log)


def test_a_port_override_rewrites_the_loopback_server_url(tmp_path, prefect_server):
    """--port moves the example's http://127.0.0.1:<bind port> with it: links, OpenAPI."""
    configured, served = free_port(), free_port()
    config = pygeoapi_config(configured, tmp_path / "results")
    path = write(tmp_path, config)
    original = path.read_text()
    log = tmp_path / "serve.log"
    env = server_env(prefect_server.api_url, tmp_path / "home")
    process = spawn_serve(path, served, tmp_path, env, log)
    base = f"http://127.0.0.1:{served}"
    try:
        wait_serving(process, base, log, timeout=60)
        output = log.read_text()
        copy = tmp_path / "pygeoapi-config-served.yml"
        assert f"server.url http://127.0.0.1:{configured} rewritten to {base}" in output
        assert "(PREFECT_API_URL)" in output
        assert yaml.safe_load(copy.read_text())["server"]["url"] == base
        assert path.read_text() == original
        links = httpx.get(f"{base}/processes", params={"f": "json"}, timeout=30).json()["links"]
        assert links and all(link["href"].startswith(base) for link in links), links
        response = httpx.post(
            f"{base}/processes/hello-world/execution",
            json={"inputs": {"name": "moved"}},
            headers={"Prefer": "respond-async"},
            timeout=30,
        )
        assert response.headers["Location"].startswith(f"{base}/jobs/")
        document = httpx.get(f"{base}/openapi", params={"f": "json"}, timeout=30).json()
        assert document["servers"][0]["url"] == base
    finally:
        stop(process, log)


def test_a_public_server_url_is_kept_with_a_warning(tmp_path):
    config = pygeoapi_config(5000, tmp_path / "results")
    config["server"]["url"] = "https://geo.example.org/pygeoapi"
    path = write(tmp_path, config)
    plan = plan_serve(path, None, None, 8080)
    assert (plan.config, plan.port, plan.url) == (path, 8080, "https://geo.example.org/pygeoapi")
    (note,) = plan.notes
    assert note.startswith("note: pygeoapi listens on port 8080, but server.url is https://")
    assert not (tmp_path / "pygeoapi-config-served.yml").exists()

    # Behind a load balancer (deploy/): bind 0.0.0.0:5000, links to localhost:8080.
    config["server"]["bind"] = {"host": "0.0.0.0", "port": 5000}
    config["server"]["url"] = "http://localhost:8080"
    plan = plan_serve(write(tmp_path, config), None, None, None)
    assert (plan.host, plan.port, plan.url) == ("0.0.0.0", 5000, "http://localhost:8080")
    assert len(plan.notes) == 1 and not (tmp_path / "pygeoapi-config-served.yml").exists()
    plan = plan_serve(write(tmp_path, config), None, "127.0.0.1", 5000)
    assert plan.host == "127.0.0.1"

    config["server"]["bind"]["port"] = "http"
    with pytest.raises(click.ClickException, match=r"server\.bind\.port"):
        plan_serve(write(tmp_path, config), None, None, None)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _tree(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        current = todo.pop()
        found.add(current)
        todo.extend(children(current))
    return found


def test_two_workers_serve_and_sigterm_stops_every_process(tmp_path, prefect_server):
    server = start_pygeoapi(
        tmp_path,
        prefect_server.api_url,
        processes={"pid": "serve_processes.PidProcessor", "hello-world": "HelloWorld"},
        workers=2,
    )
    try:
        workers = set(children(server.process.pid))
        assert len(workers) == 2
        answered = set()
        for _ in range(100):  # a new connection each: the workers race to accept it
            response = httpx.post(
                f"{server.base_url}/processes/pid/execution", json={"inputs": {}}, timeout=30
            )
            answered.add(response.json()["value"])
            if len(answered) == 2:
                break
        assert answered == workers

        # Job processes too (async jobs run in the workers' local pools).
        job_id = server.execute("hello-world", {"name": "x"}, asynchronous=True).json()["jobID"]
        server.wait_for(job_id, "successful")
        tree = _tree(server.process.pid)
        assert len(tree) > 3, tree
    finally:
        server.client.close()
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(30)
    assert server.process.returncode == 0, server.log_path.read_text()[-3000:]
    deadline = time.monotonic() + 10
    while (left := {pid for pid in tree if _alive(pid)}) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"still running after SIGTERM: {left}"
    assert "Shutting down: Master" in server.log_path.read_text()


def test_a_graceful_timeout_shorter_than_the_stop_gets_a_warning():
    manager = load_config({"name": "pygeoapi_prefect.manager.PrefectManager"})
    assert stop_note(manager, 30) is None  # 20 s grace + 5 s drain, within gunicorn's default
    note = stop_note(manager, 10)
    assert note is not None
    assert "server.manager.local.shutdown_grace (20 s)" in note
    assert "drain_seconds (5 s)" in note and "--graceful-timeout (10 s)" in note
    longer = load_config(
        {"name": "x", "local": {"shutdown_grace": 1}, "callbacks": {"drain_seconds": 9}}
    )
    assert stop_note(longer, 10) is not None  # the longer of the two drains counts
    assert stop_note(longer, 11) is None
