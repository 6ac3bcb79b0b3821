"""deploy/compose.yml names only real commands, options and settings.

No Docker engine runs here, so the compose file cannot be started: these
tests read it and check each service's command against our CLI (click's own
description of it) and Prefect's (``prefect ... --help``), its Prefect
settings against Prefect's, and the files it mounts against the repository.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from conftest import ROOT

from pygeoapi_prefect.cli.main import cli

DEPLOY = ROOT / "deploy"
COMPOSE = yaml.safe_load((DEPLOY / "compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]


def commands(service: dict[str, Any]) -> list[list[str]]:
    """The command lines a service runs (``sh -c`` scripts split on && and ||)."""
    command = service.get("command")
    if command is None:
        return []
    argv = shlex.split(command) if isinstance(command, str) else [str(arg) for arg in command]
    entrypoint = service.get("entrypoint") or []
    if argv[:2] in (["/bin/sh", "-c"], ["sh", "-c"]) or entrypoint[-1:] == ["-c"]:
        script = argv[-1]
        return [shlex.split(part) for part in re.split(r"&&|\|\||;", script) if part.strip()]
    return [argv]


def ours_and_prefects() -> list[tuple[str, list[str]]]:
    return [
        (name, argv)
        for name, service in SERVICES.items()
        for argv in commands(service)
        if argv[0] in ("pygeoapi-prefect", "prefect")
    ]


def options_of(argv: list[str]) -> list[str]:
    return [arg.split("=", 1)[0] for arg in argv if arg.startswith("--")]


def test_the_parts_of_the_guide_are_there() -> None:
    assert {
        "postgres",
        "prefect-server",
        "minio",
        "setup",
        "worker-1",
        "worker-2",
        "pygeoapi-1",
        "pygeoapi-2",
        "load-balancer",
    } <= set(SERVICES)
    run = {name: argv for name, argv in ours_and_prefects()}
    assert run["prefect-server"][:3] == ["prefect", "server", "start"]
    for name in ("pygeoapi-1", "pygeoapi-2"):
        assert run[name][:2] == ["pygeoapi-prefect", "serve"]
    assert {tuple(run[name][:2]) for name in ("worker-1", "worker-2")} == {
        ("pygeoapi-prefect", "warm-worker")
    }
    # The two workers have their own names, and a limit so that runs spread.
    names = {run[name][run[name].index("--name") + 1] for name in ("worker-1", "worker-2")}
    assert len(names) == 2
    assert all("--limit" in run[name] for name in ("worker-1", "worker-2"))


def test_our_commands_and_options_exist() -> None:
    checked = 0
    for service, argv in ours_and_prefects():
        if argv[0] != "pygeoapi-prefect":
            continue
        command = cli.commands.get(argv[1])
        assert command is not None, f"{service}: no command 'pygeoapi-prefect {argv[1]}'"
        known = {
            option
            for param in command.params
            if isinstance(param, click.Option)
            for option in (*param.opts, *param.secondary_opts)
        }
        unknown = set(options_of(argv)) - known
        assert not unknown, f"{service}: pygeoapi-prefect {argv[1]} has no {sorted(unknown)}"
        checked += 1
    assert checked >= 5  # setup's deploy, two workers, two pygeoapi instances


#: Prints ``prefect <subcommand> --help`` for each subcommand given as JSON, in
#: one interpreter (Prefect's CLI takes seconds to import), between markers.
HELP_SCRIPT = """
import contextlib, io, json, sys
from prefect.cli import app
for subcommand in json.loads(sys.argv[1]):
    sys.argv = ["prefect", *subcommand, "--help"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            app()
        except SystemExit as exit:
            code = exit.code
    print(json.dumps({"subcommand": subcommand, "code": code, "help": out.getvalue()}))
"""


def prefect_help(subcommands: list[tuple[str, ...]]) -> dict[tuple[str, ...], tuple[int, str]]:
    """Prefect's own help text of each subcommand, and its exit code."""
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    result = subprocess.run(
        [sys.executable, "-c", HELP_SCRIPT, json.dumps(subcommands)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    answers = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return {tuple(answer["subcommand"]): (answer["code"], answer["help"]) for answer in answers}


def test_prefects_commands_and_options_exist() -> None:
    wanted: dict[tuple[str, ...], set[str]] = {}
    for _service, argv in ours_and_prefects():
        if argv[0] == "prefect":
            subcommand = tuple(arg for arg in argv[1:3] if not arg.startswith("-"))
            wanted.setdefault(subcommand, set()).update(options_of(argv))
    assert set(wanted) == {("server", "start"), ("work-pool", "create")}
    helps = prefect_help(list(wanted))
    for subcommand, options in wanted.items():
        code, text = helps[subcommand]
        assert code == 0, text
        assert "Usage: prefect " + " ".join(subcommand) in text
        for option in options:
            assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text), (
                f"prefect {' '.join(subcommand)} has no {option}"
            )


def test_prefect_settings_exist_and_point_at_the_services() -> None:
    import prefect.settings

    for name, service in SERVICES.items():
        for key in service.get("environment") or {}:
            if key.startswith("PREFECT_"):
                assert hasattr(prefect.settings, key), f"{name}: {key} is not a Prefect setting"
    server_env = SERVICES["prefect-server"]["environment"]
    assert server_env["PREFECT_API_DATABASE_CONNECTION_URL"].startswith(
        "postgresql+asyncpg://prefect:"
    )
    assert "@postgres:5432/" in server_env["PREFECT_API_DATABASE_CONNECTION_URL"]
    for name in ("setup", "worker-1", "worker-2", "pygeoapi-1", "pygeoapi-2"):
        environment = SERVICES[name]["environment"]
        assert environment["PREFECT_API_URL"] == "http://prefect-server:4200/api", name
        assert "AWS_ACCESS_KEY_ID" in environment, name


@pytest.mark.parametrize("name", ["setup", "pygeoapi-1", "pygeoapi-2", "load-balancer"])
def test_mounted_files_exist(name: str) -> None:
    for volume in SERVICES[name]["volumes"]:
        source = volume.split(":", 1)[0]
        if source.startswith("."):
            assert (DEPLOY / source).is_file(), f"{name} mounts {source}, which is missing"
    assert (DEPLOY / "Dockerfile").is_file()


def test_the_load_balancer_reaches_both_instances() -> None:
    upstreams = re.findall(r"server ([\w-]+):(\d+);", (DEPLOY / "nginx.conf").read_text())
    assert set(upstreams) == {("pygeoapi-1", "5000"), ("pygeoapi-2", "5000")}


def test_the_instances_serve_where_the_load_balancer_looks(tmp_path: Path) -> None:
    """serve takes host and port from server.bind; links keep the balancer's server.url."""
    from pygeoapi_prefect.cli.serve import plan_serve

    upstreams = {
        port
        for _, port in re.findall(r"server ([\w-]+):(\d+);", (DEPLOY / "nginx.conf").read_text())
    }
    listen = re.search(r"listen (\d+);", (DEPLOY / "nginx.conf").read_text())
    assert listen is not None
    for name in ("pygeoapi-1", "pygeoapi-2"):
        argv = commands(SERVICES[name])[0]
        assert "--port" not in argv and "--host" not in argv
        assert int(argv[argv.index("--workers") + 1]) >= 2
        openapi = tmp_path / Path(argv[argv.index("--openapi") + 1]).name
        plan = plan_serve(DEPLOY / "pygeoapi-config.yml", openapi, None, None)
        assert (plan.host, {str(plan.port)}) == ("0.0.0.0", upstreams)
        assert plan.url == f"http://localhost:{listen.group(1)}"
        assert plan.config == DEPLOY / "pygeoapi-config.yml"


def test_the_pygeoapi_config_is_valid(tmp_path: Path) -> None:
    from pygeoapi_prefect.cli.main import write_openapi
    from pygeoapi_prefect.config import load_config

    config = yaml.safe_load((DEPLOY / "pygeoapi-config.yml").read_text())
    manager = load_config({**config["server"]["manager"], "processes": {}})
    assert manager.results_url() == "s3://pygeoapi-results/jobs"
    deployment = config["resources"]["hi-prefect-world"]["processor"]["deployment"]
    setup = " ".join(" ".join(argv) for argv in commands(SERVICES["setup"]))
    assert "deploy-process-as-flow hi-prefect-world" in setup
    assert f"--deployment-name {deployment.split('/')[1]}" in setup
    write_openapi(DEPLOY / "pygeoapi-config.yml", tmp_path / "openapi.yml")
    assert "/processes/hi-prefect-world/execution" in (tmp_path / "openapi.yml").read_text()
