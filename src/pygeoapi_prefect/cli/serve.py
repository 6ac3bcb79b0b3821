"""``pygeoapi-prefect serve``: pygeoapi under gunicorn, and a Prefect server unless one is set.

The command reads the pygeoapi config for where to listen (``server.bind``),
the address pygeoapi writes its links with (``server.url``) and the Prefect
API (``server.manager.connection``); see :func:`plan_serve`. It regenerates
the OpenAPI document when stale, finds or starts the Prefect API, then runs
gunicorn in this process (its master) with ``--workers`` gthread workers.
Each worker imports :mod:`pygeoapi_prefect.web.flask` itself, after the
fork, so that no thread or connection of one process is shared with another.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import click

import pygeoapi_prefect.metrics as metrics
from pygeoapi_prefect.cli.common import (
    Stop,
    config_errors,
    config_option,
    examples,
    raise_stop,
    waiting_for,
)
from pygeoapi_prefect.cli.gunicorn_server import bind_address, run_gunicorn
from pygeoapi_prefect.cli.openapi import default_openapi_path, openapi_is_current, write_openapi

if TYPE_CHECKING:
    from pygeoapi_prefect.config import ManagerConfig

__all__ = ["Plan", "plan_serve", "serve", "stop_note"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000
DEFAULT_PREFECT_PORT = 4200
PREFECT_HOME = Path(".prefect-home")
_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


@dataclass(frozen=True)
class Plan:
    """What ``serve`` serves, read from the pygeoapi config and the options."""

    #: The config pygeoapi and the OpenAPI generation read: the given one, or
    #: a copy with ``server.url`` rewritten to the served port.
    config: Path
    openapi: Path
    host: str
    port: int
    #: ``server.url``, as pygeoapi writes its links with it.
    url: str
    #: ``server.manager.connection``, if the config sets it.
    connection: str | None
    #: What the user should know (a rewritten or mismatching ``server.url``).
    notes: tuple[str, ...] = ()


def _settings(config: Path) -> dict[str, Any]:
    # pygeoapi's own reader: ${VAR} and ${VAR:-default} as pygeoapi sees them.
    from pygeoapi.util import yaml_load

    try:
        with config.open(encoding="utf-8") as handle:
            settings = yaml_load(handle)
    except (OSError, ValueError) as exc:  # EnvironmentError: a ${VAR} not set
        raise click.ClickException(f"{config}: {exc}") from exc
    if not isinstance(settings, dict) or not isinstance(settings.get("server"), dict):
        raise click.ClickException(f"{config}: no server section")
    return settings


def _port_of(url: str) -> int | None:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return None
    return port or {"http": 80, "https": 443}.get(parts.scheme)


def _with_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    host = parts.hostname or DEFAULT_HOST
    host = f"[{host}]" if ":" in host else host
    return urlunsplit(parts._replace(netloc=f"{host}:{port}"))


def _bind_setting(config: Path, bind: dict[str, Any], key: str, default: Any) -> Any:
    value = bind.get(key)
    if value is None:
        return default
    if key == "port":
        try:
            return int(value)
        except (TypeError, ValueError) as exc:
            raise click.ClickException(
                f"{config}: server.bind.port: {value!r} is not a port number"
            ) from exc
    return str(value)


def plan_serve(config: Path, openapi: Path | None, host: str | None, port: int | None) -> Plan:
    """Work out what to serve, and write the rewritten config if one is needed.

    ``host`` and ``port`` (the options) override ``server.bind``. pygeoapi
    writes every link from ``server.url``: when the served port differs
    from its port and it is the loopback default (a loopback host with the
    port of ``server.bind``, as in the example config), a copy of the config
    with ``server.url`` on the served port is written next to the OpenAPI
    document (``<config stem>-served.yml``) and served instead; otherwise
    (a public URL, a proxy in front) ``server.url`` is kept and a note says
    that links use it.
    """
    settings = _settings(config)
    server = settings["server"]
    bind = server.get("bind") or {}
    bind_port = _bind_setting(config, bind, "port", DEFAULT_PORT)
    host = host or _bind_setting(config, bind, "host", DEFAULT_HOST)
    port = port or bind_port
    url = server.get("url")
    if not isinstance(url, str) or not url:
        raise click.ClickException(f"{config}: server.url is not set (pygeoapi needs it)")
    manager = server.get("manager") or {}
    connection = manager.get("connection") if isinstance(manager, dict) else None
    served_config, notes = config, []
    url_port = _port_of(url)
    if url_port != port:
        if urlsplit(url).hostname in _LOOPBACK and url_port == bind_port:
            folder = (openapi or config).parent
            served_config = folder / f"{config.stem}-served{config.suffix}"
            new_url = _with_port(url, port)
            _write_served_config(config, served_config, new_url)
            notes.append(
                f"server.url {url} rewritten to {new_url} (the served port) in "
                f"{served_config}, which pygeoapi reads"
            )
            url = new_url
        else:
            notes.append(
                f"note: pygeoapi listens on port {port}, but server.url is {url}: every "
                "link it writes uses server.url (right behind a proxy at that address; "
                "else set server.url)"
            )
    return Plan(
        config=served_config,
        openapi=openapi or default_openapi_path(served_config),
        host=host,
        port=port,
        url=url,
        connection=str(connection) if connection else None,
        notes=tuple(notes),
    )


def _write_served_config(config: Path, target: Path, url: str) -> None:
    import yaml  # type: ignore[import-untyped]

    # The file as written (${VAR} left for pygeoapi to substitute): only server.url changes.
    raw = yaml.safe_load(config.read_text(encoding="utf-8"))
    raw["server"]["url"] = url
    header = (
        f"# Written by pygeoapi-prefect serve from {config.name}, with server.url on the\n"
        "# served port; regenerated at each start: edit the original instead.\n"
    )
    try:
        target.write_text(header + yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    except OSError as exc:
        raise click.ClickException(
            f"cannot write {target} (server.url on the served port): {exc}; "
            "give --openapi a path in a writable folder, or set server.url"
        ) from exc


def _validate_manager(config: Path, settings: dict[str, Any]) -> ManagerConfig | None:
    # In the master, for a clear message: the workers would only fail to boot.
    manager = settings["server"].get("manager") or {}
    if isinstance(manager, dict) and str(manager.get("name", "")).endswith("PrefectManager"):
        from pygeoapi_prefect.config import load_config

        with config_errors(config):
            return load_config({**manager, "processes": {}})
    return None


def stop_note(manager: ManagerConfig, graceful_timeout: int) -> str | None:
    """A warning when a stopping worker would be killed before it has stopped its jobs."""
    grace = manager.local.shutdown_grace
    drain = max(manager.drain_seconds, manager.callbacks.drain_seconds)
    if grace + drain < graceful_timeout:
        return None
    return (
        f"warning: server.manager.local.shutdown_grace ({grace:g} s) + drain_seconds "
        f"({drain:g} s) reach --graceful-timeout ({graceful_timeout} s): gunicorn kills a "
        "stopping worker before its running jobs are recorded as interrupted and its "
        "waiting writes are done"
    )


@click.command(
    "serve",
    epilog=examples(
        "pygeoapi-prefect serve",
        "pygeoapi-prefect serve --config my-config.yml --port 8080 --workers 4",
        "PREFECT_API_URL=http://127.0.0.1:4200/api pygeoapi-prefect serve",
    ),
)
@config_option
@click.option(
    "--openapi",
    "openapi",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="OpenAPI document; regenerated when missing or stale "
    "[default: example-openapi.yml beside the config].",
)
@click.option(
    "--host",
    default=None,
    help=f"Address for pygeoapi [default: server.bind.host, else {DEFAULT_HOST}].",
)
@click.option(
    "--port",
    default=None,
    type=click.IntRange(1, 65535),
    help=f"Port for pygeoapi [default: server.bind.port, else {DEFAULT_PORT}]; see "
    "server.url in the docs when it differs from the config's.",
)
@click.option(
    "--workers",
    default=2,
    show_default=True,
    type=click.IntRange(min=1),
    help="gunicorn worker processes; their local job pools share "
    "server.manager.local.max_workers (per worker with local.pool_scope: process).",
)
@click.option(
    "--threads",
    default=8,
    show_default=True,
    type=click.IntRange(min=1),
    help="Threads per worker: the requests one worker serves at once (a sync job "
    "holds its thread until it ends).",
)
@click.option(
    "--graceful-timeout",
    default=30,
    show_default=True,
    type=click.IntRange(min=0),
    help="Seconds the workers get to finish their requests after SIGTERM.",
)
@click.option(
    "--prefect-port",
    default=DEFAULT_PREFECT_PORT,
    show_default=True,
    type=int,
    help="Port of the Prefect server started when neither server.manager.connection "
    "nor PREFECT_API_URL names one.",
)
@click.option(
    "--prefect-home",
    default=PREFECT_HOME,
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="PREFECT_HOME (database, logs) of the Prefect server started here.",
)
def serve(
    config: Path,
    openapi: Path | None,
    host: str | None,
    port: int | None,
    workers: int,
    threads: int,
    graceful_timeout: int,
    prefect_port: int,
    prefect_home: Path,
) -> None:
    """Serve pygeoapi with gunicorn, and a Prefect server unless one is set.

    Listens on server.bind of the config (or --host/--port); regenerates the
    OpenAPI document when it is missing or stale; uses the Prefect API of
    server.manager.connection, else PREFECT_API_URL, else the one answering
    on 127.0.0.1:4200, else starts one there (state in ./.prefect-home);
    then serves pygeoapi_prefect.flask_app:APP with gunicorn. SIGTERM stops
    gunicorn gracefully, Ctrl-C at once, then the Prefect server it started.
    """
    config = config.resolve()
    plan = plan_serve(config, openapi.resolve() if openapi else None, host, port)
    for note in plan.notes:
        click.echo(note, err=True)
    manager = _validate_manager(config, _settings(plan.config))
    stopping = stop_note(manager, graceful_timeout) if manager is not None else None
    if stopping:
        click.echo(stopping, err=True)
    if not openapi_is_current(plan.config, plan.openapi):
        click.echo(f"generating {plan.openapi.name} from {plan.config.name}", err=True)
        with config_errors(plan.config):
            write_openapi(plan.config, plan.openapi)

    master = os.getpid()
    signal.signal(signal.SIGTERM, raise_stop)
    # Also when started in the background of a shell, which ignores SIGINT.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    started: list[Any] = []  # the Prefect server started here, once it starts
    made_metrics_dir = _metrics_dir(workers)
    try:
        ui_url = _prefect(plan, prefect_port, prefect_home, started)
        os.environ["PYGEOAPI_CONFIG"] = str(plan.config)
        os.environ["PYGEOAPI_OPENAPI"] = str(plan.openapi)

        def ready() -> None:
            click.echo(f"pygeoapi:   http://{bind_address(plan.host, plan.port)}")
            if plan.url.rstrip("/") != f"http://{bind_address(plan.host, plan.port)}":
                click.echo(f"links use:  {plan.url}")
            click.echo(f"Prefect UI: {ui_url}")
            click.echo(f"{workers} gunicorn worker(s), {threads} threads each. Ctrl-C to stop.")
            sys.stdout.flush()

        run_gunicorn(
            plan.host,
            plan.port,
            workers=workers,
            threads=threads,
            graceful_timeout=graceful_timeout,
            when_ready=ready,
        )
    except (KeyboardInterrupt, Stop):
        click.echo("stopping")
    finally:
        # The workers leave through here too (gunicorn forks them in
        # run_gunicorn): only the master stops what it started.
        if started and os.getpid() == master:
            click.echo("stopping the Prefect server", err=True)
            started[0].stop()
        if made_metrics_dir and os.getpid() == master:
            shutil.rmtree(made_metrics_dir, ignore_errors=True)


def _metrics_dir(workers: int) -> str | None:
    """Set up metrics for several workers; returns the folder made here (to remove at exit).

    Several workers add up their metrics in prometheus_client's multiprocess
    folder: the operator's ``PROMETHEUS_MULTIPROC_DIR`` (emptied of an earlier
    run's files), else a new temporary one. One worker needs none.
    """
    folder = metrics.multiprocess_dir()
    if folder is not None:
        metrics.prepare_multiprocess_dir(folder)
        return None
    if workers < 2:
        return None
    made = tempfile.mkdtemp(prefix="pygeoapi-prefect-metrics-")
    os.environ[metrics.MULTIPROC_ENV] = made
    click.echo(f"metrics of the {workers} workers add up in {made} (removed at exit)", err=True)
    return made


def _prefect(plan: Plan, prefect_port: int, prefect_home: Path, started: list[Any]) -> str:
    """The Prefect UI URL; a Prefect server started here is appended to ``started``."""
    from pygeoapi_prefect.prefect.server import PrefectServer, prefect_answers
    from pygeoapi_prefect.urls import without_credentials

    api_url, source = plan.connection, "server.manager.connection"
    if not api_url and os.environ.get("PREFECT_API_URL"):
        api_url, source = os.environ["PREFECT_API_URL"], "PREFECT_API_URL"
    if api_url:
        shown = without_credentials(api_url)
        if prefect_answers(api_url):
            _check_credentials(api_url)
            click.echo(f"using the Prefect API at {shown} ({source})", err=True)
        else:
            click.echo(f"warning: no Prefect API answers at {shown} ({source})", err=True)
        return shown.rstrip("/").removesuffix("/api")
    local = f"http://127.0.0.1:{prefect_port}/api"
    if prefect_answers(local):
        click.echo(f"using the Prefect server already running at {local}")
    else:
        click.echo("starting a Prefect server (the first start takes about 20 s)...", err=True)
        server = PrefectServer(prefect_home, port=prefect_port)
        started.append(server)  # stopped by the caller, also if stopped while starting
        try:
            server.start(waiting=waiting_for(local))
        except RuntimeError as exc:
            raise click.ClickException(str(exc)) from exc
    _check_credentials(local)
    # The manager, and the job processes it starts, find the server through it.
    os.environ["PREFECT_API_URL"] = local
    return local.removesuffix("/api")


def _check_credentials(api_url: str) -> None:
    """Fail at start, naming the setting, if Prefect refuses the credentials (or their absence).

    ``/health`` answers without credentials, so it cannot tell; every job
    request would answer 503 instead. An unreachable server is left to the
    requests (it may come up later).
    """
    from pygeoapi_prefect.errors import PrefectAuthFailed, PrefectManagerError
    from pygeoapi_prefect.prefect.api import PrefectAPI

    api = PrefectAPI(api_url, timeout=5.0)
    try:
        api.request("GET", "/admin/version")
    except PrefectAuthFailed as exc:
        raise click.ClickException(exc.message) from exc
    except PrefectManagerError:
        pass
    finally:
        api.close()
