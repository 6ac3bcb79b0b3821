"""Failures: processes that raise, Prefect out of reach, bad configs."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest
import yaml
from conftest import ROOT, pygeoapi_config, server_env
from ogc import validate

from pygeoapi_prefect.errors import ConfigError, PrefectUnavailable
from pygeoapi_prefect.manager import PrefectManager
from pygeoapi_prefect.prefect.server import free_port


def test_sync_failure_is_500_with_the_process_message_and_the_job(pygeoapi, prefect_api):
    response = pygeoapi.execute("fail", {"what": "sync input"})
    # The inputs were valid: the process failed (pygeoapi's ProcessorExecuteError is a 500).
    assert response.status_code == 500
    document = response.json()
    validate(document, "exception")
    assert "cannot handle sync input" in document["description"]
    listed = pygeoapi.client.get("/jobs", params={"limit": 20, "f": "json"}).json()["jobs"]
    failed = [job for job in listed if job["processID"] == "fail" and job["status"] == "failed"]
    assert any("cannot handle sync input" in job["message"] for job in failed)


def test_hello_world_without_name_is_400(pygeoapi):
    response = pygeoapi.execute("hello-world", {"message": "no name"})
    assert response.status_code == 400
    assert "missing required input 'name'" in response.json()["description"]


def test_async_failure_says_why(pygeoapi):
    job_id = pygeoapi.execute("fail", {"what": "async input"}, asynchronous=True).json()["jobID"]
    document = pygeoapi.wait_for(job_id, "failed")
    validate(document, "statusInfo")
    assert "cannot handle async input" in document["message"]
    results = pygeoapi.client.get(f"/jobs/{job_id}/results", params={"f": "json"})
    assert results.status_code == 500
    validate(results.json(), "exception")
    assert "cannot handle async input" in results.json()["description"]


def test_unknown_process_is_404(pygeoapi):
    response = pygeoapi.execute("no-such-process", {})
    assert response.status_code == 404
    validate(response.json(), "exception")


@pytest.fixture
def hanging_port():
    """A port that accepts connections and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield sock.getsockname()[1]


@pytest.mark.parametrize("kind", ["refused", "hanging"])
def test_prefect_unreachable_is_503_within_10s_but_sync_jobs_answer(
    pygeoapi_factory, hanging_port, kind
):
    port = free_port() if kind == "refused" else hanging_port
    server = pygeoapi_factory(prefect_api_url=f"http://127.0.0.1:{port}/api")
    assert server.client.get("/processes", params={"f": "json"}).status_code == 200
    calls = [
        lambda: server.client.get("/jobs", params={"f": "json"}),
        lambda: server.job("00000000-0000-0000-0000-000000000001"),
        lambda: server.execute("hello-world", {"name": "x"}, asynchronous=True),
        lambda: server.client.delete("/jobs/00000000-0000-0000-0000-000000000001"),
    ]
    for call in calls:
        started = time.monotonic()
        response = call()
        elapsed = time.monotonic() - started
        assert response.status_code == 503, response.text
        assert elapsed < 10, elapsed
        document = response.json()
        validate(document, "exception")
        assert f"127.0.0.1:{port}" in document["description"]
    # A sync job needs no Prefect to run: the client gets its result within the
    # same bound, and the record is written in the background once Prefect is back.
    started = time.monotonic()
    response = server.execute("hello-world", {"name": "x"})
    assert response.status_code == 200, response.text
    assert time.monotonic() - started < 10
    assert response.json() == {"id": "echo", "value": "Hello x!"}
    assert not response.headers.get("Location", "").rstrip("/").endswith("/jobs")
    assert server.client.get("/processes", params={"f": "json"}).status_code == 200


def test_no_prefect_api_configured_is_503_naming_the_keys(monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    manager = PrefectManager(
        {
            "name": "pygeoapi_prefect.manager.PrefectManager",
            "processes": {"hello-world": {"type": "process", "processor": {"name": "HelloWorld"}}},
        }
    )
    with pytest.raises(PrefectUnavailable) as caught:
        manager.get_jobs()
    assert caught.value.http_status_code == 503
    assert "server.manager.connection" in caught.value.message
    assert "PREFECT_API_URL" in caught.value.message


@pytest.mark.parametrize(
    ("manager", "key"),
    [
        ({"local": {"max_workers": 0}}, "server.manager.local.max_workers"),
        ({"local": {"max_wrokers": 2}}, "server.manager.local.max_wrokers"),
        (
            {"local": {"process_limits": {"buffer": 0}}},
            "server.manager.local.process_limits.buffer",
        ),
        ({"local": {"process_limits": [2]}}, "server.manager.local.process_limits"),
        ({"local": {"pool_scope": "host"}}, "server.manager.local.pool_scope"),
        (
            {"local": {"pool_scope": "process", "pool_dir": "/srv/slots"}},
            "server.manager.local: Value error, `pool_dir`",
        ),
        ({"connection": "ftp://x"}, "server.manager.connection"),
        ({"results": "not-a-mapping"}, "server.manager.results"),
        ({"api_timeout": "soon"}, "server.manager.api_timeout"),
        ({"results": {"url": "memory://x"}}, "server.manager.results"),
        ({"results": {"url": "/x", "block": "remote-file-system/y"}}, "server.manager.results"),
        ({"results": {"raw_several": "xml"}}, "server.manager.results.raw_several"),
    ],
)
def test_malformed_config_names_the_yaml_key(manager, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        PrefectManager({"name": "pygeoapi_prefect.manager.PrefectManager", **manager})


def test_malformed_config_stops_start_up_with_the_key(tmp_path):
    config = pygeoapi_config(
        free_port(), tmp_path / "results", manager={"local": {"max_workers": -1}}
    )
    path = tmp_path / "bad.yml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "-m", "pygeoapi_prefect.cli", "serve", "--config", str(path)],
        cwd=tmp_path,
        env=server_env(None, tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "server.manager.local.max_workers" in result.stderr
    assert "Traceback" not in result.stderr


def test_constructor_does_no_io():
    # No Prefect server answers here: building the manager must not care.
    manager = PrefectManager(
        {
            "name": "pygeoapi_prefect.manager.PrefectManager",
            "connection": f"http://127.0.0.1:{free_port()}/api",
            "processes": {"hello-world": {"type": "process", "processor": {"name": "HelloWorld"}}},
        }
    )
    assert manager.is_async
    # Nor does it build an engine: that happens on first use, in the serving process.
    from pygeoapi_prefect.execution import engine

    assert not any(e.config == manager.config for e in engine._ENGINES.values())
    assert (ROOT / "example-config.yml").exists()
