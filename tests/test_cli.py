"""The pygeoapi-prefect command line, run for real."""

from __future__ import annotations

import shutil
import signal

import httpx
import yaml
from click.testing import CliRunner
from conftest import ROOT, pygeoapi_config, server_env, spawn_serve, wait_serving

from pygeoapi_prefect.cli.main import cli, default_openapi_path, openapi_is_current
from pygeoapi_prefect.prefect.server import free_port, prefect_answers


def test_openapi_command_regenerates_and_stamps(tmp_path):
    config = tmp_path / "my-config.yml"
    shutil.copy(ROOT / "example-config.yml", config)
    result = CliRunner().invoke(cli, ["openapi", "--config", str(config)])
    assert result.exit_code == 0, result.output
    document = tmp_path / "my-openapi.yml"
    assert default_openapi_path(config) == document
    assert openapi_is_current(config, document)
    assert "/processes/hello-world/execution" in yaml.safe_load(document.read_text())["paths"]
    config.write_text(config.read_text() + "\n# changed\n")
    assert not openapi_is_current(config, document)


def test_example_openapi_is_current():
    """The committed example-openapi.yml matches example-config.yml."""
    assert openapi_is_current(ROOT / "example-config.yml", ROOT / "example-openapi.yml")


def test_help_has_examples():
    for command in (["serve", "--help"], ["openapi", "--help"]):
        result = CliRunner().invoke(cli, command)
        assert result.exit_code == 0
        assert "Example" in result.output


def test_serve_starts_prefect_and_stops_everything_on_sigterm(tmp_path):
    port, prefect_port = free_port(), free_port()
    config = tmp_path / "demo-config.yml"
    config.write_text(yaml.safe_dump(pygeoapi_config(port, tmp_path / "results")))
    log = tmp_path / "serve.log"
    env = server_env(None, tmp_path / "home")
    process = spawn_serve(config, port, tmp_path, env, log, "--prefect-port", str(prefect_port))
    prefect_url = f"http://127.0.0.1:{prefect_port}/api"
    try:
        wait_serving(process, f"http://127.0.0.1:{port}", log, timeout=120)
        output = log.read_text()
        assert f"pygeoapi:   http://127.0.0.1:{port}" in output
        assert f"Prefect UI: http://127.0.0.1:{prefect_port}" in output
        assert "starting a Prefect server (the first start takes about 20 s)..." in output
        assert (tmp_path / ".prefect-home" / "prefect.db").exists()
        assert (tmp_path / "demo-openapi.yml").exists()
        response = httpx.post(
            f"http://127.0.0.1:{port}/processes/hello-world/execution",
            json={"inputs": {"name": "demo"}},
            timeout=30,
        )
        assert response.status_code == 200
        assert prefect_answers(prefect_url)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    assert process.returncode == 0, log.read_text()
    assert not prefect_answers(prefect_url, timeout=1)


def write_config(tmp_path, **manager):
    config = pygeoapi_config(free_port(), tmp_path / "results", manager=manager)
    path = tmp_path / "doctor-config.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_doctor_all_good(tmp_path, prefect_server, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    path = write_config(tmp_path, connection=prefect_server.api_url)
    result = CliRunner().invoke(cli, ["doctor", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert "ok   prefect: Prefect" in result.output
    assert "ok   results: result store" in result.output
    assert "ok   process hello-world: loads" in result.output
    assert "all good" in result.output


def test_doctor_says_what_is_wrong_and_how_to_fix_it(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    path = write_config(
        tmp_path,
        connection=f"http://127.0.0.1:{free_port()}/api",
        results={"url": str(blocker / "results")},
    )
    config = yaml.safe_load(path.read_text())
    config["resources"]["broken"] = {"type": "process", "processor": {"name": "no.such.Thing"}}
    path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(cli, ["doctor", "--config", str(path)])
    assert result.exit_code == 1
    assert "FAIL prefect:" in result.output
    assert "fix: start a Prefect server" in result.output
    assert "FAIL results:" in result.output
    assert "FAIL process broken: cannot be loaded" in result.output
    assert "3 check(s) failed" in result.output


def test_doctor_names_a_bad_key(tmp_path):
    path = write_config(tmp_path, local={"max_workers": 0})
    result = CliRunner().invoke(cli, ["doctor", "--config", str(path)])
    assert result.exit_code == 1
    assert "server.manager.local.max_workers" in result.output
