"""The ``pygeoapi-prefect`` command line."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import click

from pygeoapi_prefect import __version__
from pygeoapi_prefect.cli.common import (
    Stop,
    config_errors,
    config_option,
    examples,
    raise_stop,
)
from pygeoapi_prefect.cli.openapi import default_openapi_path, openapi_is_current, write_openapi
from pygeoapi_prefect.cli.prune import prune_command
from pygeoapi_prefect.cli.serve import serve

__all__ = ["cli", "default_openapi_path", "openapi_is_current", "write_openapi"]

logger = logging.getLogger(__name__)


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="\b\nExamples:\n  pygeoapi-prefect serve --config example-config.yml\n"
    "  pygeoapi-prefect doctor --config example-config.yml\n"
    "  pygeoapi-prefect COMMAND --help",
)
@click.version_option(__version__, prog_name="pygeoapi-prefect")
def cli() -> None:
    """Run pygeoapi processes as Prefect flow runs."""


@cli.command(
    "openapi",
    epilog=examples(
        "pygeoapi-prefect openapi --config example-config.yml",
        "pygeoapi-prefect openapi --config prod.yml --output /srv/pygeoapi/openapi.yml",
    ),
)
@config_option
@click.option(
    "--output",
    "output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write the document [default: example-openapi.yml beside the config].",
)
def openapi_command(config: Path, output: Path | None) -> None:
    """Regenerate pygeoapi's OpenAPI document from a config.

    The document starts with a stamp naming the config's hash and pygeoapi's
    version, which `serve` uses to tell whether it is stale.
    """
    output = output or default_openapi_path(config)
    with config_errors(config):
        write_openapi(config, output)
    click.echo(f"wrote {output}")


cli.add_command(serve)
cli.add_command(prune_command)


def _progress(step: str) -> None:
    click.echo(f"  {step}...", err=True)


def _deploy_options(command: Any) -> Any:
    options = [
        click.argument("process_id"),
        config_option,
        click.option(
            "--deployment-name",
            default="default",
            show_default=True,
            help="Name of the deployment (it is shown as PROCESS_ID/NAME).",
        ),
        click.option(
            "--work-pool",
            default="pygeoapi",
            show_default=True,
            help="Work pool whose workers run the jobs (it must exist).",
        ),
        click.option(
            "--prefect-queue-name",
            "--work-queue",
            "work_queue",
            default=None,
            help="Work queue in the pool [default: the pool's default queue].",
        ),
        click.option(
            "--storage-block-name",
            default=None,
            help="TYPE/NAME of a storage block to upload the flow code to, e.g. "
            "remote-file-system/test-sb1 [default: a local folder].",
        ),
        click.option(
            "--warm",
            is_flag=True,
            help="Run each job on a warm worker (pygeoapi-prefect warm-worker): it starts "
            "from a pre-imported interpreter instead of a new Python process.",
        ),
        click.option(
            "--publish",
            "publish_tag",
            flag_value="pygeoapi.publish",
            default=None,
            help="Tag the deployment pygeoapi.publish, so that pygeoapi servers with "
            "server.manager.publish.enabled list it as a process without a config entry.",
        ),
        click.option(
            "--cron",
            default=None,
            help='Schedule runs of the process, e.g. "0 6 * * *" (every day at 06:00 UTC); '
            "each run is a job, listed in /jobs with its status and results.",
        ),
        click.option(
            "--interval",
            type=click.FloatRange(min=0, min_open=True),
            default=None,
            help="Schedule a run every this many seconds (instead of --cron).",
        ),
        click.option(
            "--inputs",
            "inputs_json",
            default=None,
            help="The inputs of the scheduled runs, as JSON (checked against the "
            'process\'s inputs), e.g. \'{"name": "world"}\'.',
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@cli.command(
    "deploy-process-as-flow",
    epilog=examples(
        "pygeoapi-prefect deploy-process-as-flow hi-prefect-world --work-pool pygeoapi",
        "pygeoapi-prefect deploy-process-as-flow hello-world --work-pool pygeoapi --warm --publish",
        "pygeoapi-prefect deploy-process-as-flow hello-world --cron '0 6 * * *' \\",
        '    --inputs \'{"name": "morning"}\'',
        "PYGEOAPI_CONFIG=example-config.yml pygeoapi-prefect deploy-process-as-flow \\",
        "    hi-prefect-world --prefect-queue-name=test --deployment-name=test \\",
        "    --storage-block-name=remote-file-system/test-sb1",
    ),
)
@_deploy_options
def deploy_process_as_flow(
    process_id: str,
    config: Path,
    deployment_name: str,
    work_pool: str,
    work_queue: str | None,
    storage_block_name: str | None,
    warm: bool,
    publish_tag: str | None,
    cron: str | None,
    interval: float | None,
    inputs_json: str | None,
) -> None:
    """Create or update the Prefect deployment of a pygeoapi process.

    Works for Prefect-flow processes (FlowProcessor) and standard pygeoapi
    processes alike. The deployment is tagged like the process's jobs, so
    runs started from the Prefect UI or CLI show up in /jobs. Set
    PREFECT_API_URL to the Prefect server first. Progress goes to stderr.
    """
    from pygeoapi_prefect.cli.deploy import DeployError, DeployRequest, deploy_process

    inputs = None
    if inputs_json is not None:
        try:
            inputs = json.loads(inputs_json)
        except ValueError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--inputs") from exc
        if not isinstance(inputs, dict):
            raise click.BadParameter(
                "must be a JSON object keyed by input id", param_hint="--inputs"
            )
    request = DeployRequest(
        config_path=config,
        process_id=process_id,
        deployment_name=deployment_name,
        work_pool=work_pool,
        work_queue=work_queue,
        storage_block=storage_block_name,
        publish_tag=publish_tag,
        warm=warm,
        cron=cron,
        interval=interval,
        inputs=inputs,
    )
    click.echo(f"deploying {process_id} to work pool {work_pool}...")
    try:
        with config_errors(request.config_path):
            name = deploy_process(request, progress=_progress)
    except DeployError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"deployment {name} is ready; run it with: prefect deployment run {name}")


cli.add_command(deploy_process_as_flow, "deploy-as-prefect-flow")


@cli.command(
    "warm-worker",
    epilog=examples(
        "pygeoapi-prefect warm-worker --pool pygeoapi",
        "pygeoapi-prefect warm-worker --pool pygeoapi --name worker-1 --limit 4",
        "pygeoapi-prefect deploy-process-as-flow hello-world --work-pool pygeoapi --warm",
    ),
)
@click.option("--pool", "pool", required=True, help="The process work pool to serve.")
@click.option(
    "--socket",
    "socket_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Unix socket of the fork server [default: a temporary file].",
)
@click.option(
    "--query-seconds",
    default=1.0,
    show_default=True,
    type=float,
    help="How often the worker asks Prefect for runs (PREFECT_WORKER_QUERY_SECONDS).",
)
@click.option(
    "--name",
    "name",
    default=None,
    help="Name of the worker, shown in Prefect [default: Prefect's, with a random id].",
)
@click.option(
    "--limit",
    "limit",
    default=None,
    type=click.IntRange(min=1),
    help="Most runs at once on this worker; with several workers on a pool, "
    "a limit leaves the other runs to them [default: no limit].",
)
def warm_worker(
    pool: str, socket_path: Path | None, query_seconds: float, name: str | None, limit: int | None
) -> None:
    """Run a Prefect process worker whose runs start warm.

    Starts a fork server that imports Prefect, pygeoapi and pygeoapi-prefect
    once, and `prefect worker start --pool POOL --type process` next to it.
    Deployments made with `deploy-process-as-flow --warm` hand each run to
    the fork server instead of starting a new Python process. Ctrl-C or
    SIGTERM stops both.
    """
    import subprocess
    import tempfile
    import time

    from pygeoapi_prefect.execution.heartbeat import HEARTBEAT_ENV
    from pygeoapi_prefect.prefect.server import stop_process_group
    from pygeoapi_prefect.warm_client import SOCKET_ENV

    folder = None
    if socket_path is None:
        folder = tempfile.mkdtemp(prefix="pygeoapi-prefect-warm-")
        socket_path = Path(folder) / "warm.sock"
    server = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from pygeoapi_prefect.execution.warm import serve; serve({str(socket_path)!r})",
        ],
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while not socket_path.exists():
        if server.poll() is not None or time.monotonic() > deadline:
            raise click.ClickException("the warm server did not start")
        time.sleep(0.1)
    env = dict(os.environ)
    env[SOCKET_ENV] = str(socket_path)
    env["PREFECT_WORKER_QUERY_SECONDS"] = f"{query_seconds:g}"
    # Heartbeats for every run (Prefect's, and ours in deployed processes,
    # which the zombie automation watches), every 30 s.
    env.setdefault("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "30")
    env.setdefault(HEARTBEAT_ENV, "30")
    # The runs' command is `python -m ...`: make `python` this interpreter.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    click.echo(f"warm server on {socket_path}; starting a worker for pool {pool}")
    command = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool]
    command += ["--type", "process"]
    command += ["--name", name] if name else []
    command += ["--limit", str(limit)] if limit else []
    worker = subprocess.Popen(
        command,
        env=env,
        start_new_session=True,
    )
    signal.signal(signal.SIGTERM, raise_stop)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        worker.wait()
    except (KeyboardInterrupt, Stop):
        click.echo("stopping")
    finally:
        for process in (worker, server):
            stop_process_group(process, timeout=20)
        if folder is not None:
            import shutil

            shutil.rmtree(folder, ignore_errors=True)


@cli.command(
    "doctor",
    epilog=examples(
        "pygeoapi-prefect doctor",
        "PREFECT_API_URL=http://prefect:4200/api pygeoapi-prefect doctor --config prod.yml",
        "pygeoapi-prefect doctor --pool pygeoapi --pool gpu",
    ),
)
@click.option(
    "--config",
    "config",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="PYGEOAPI_CONFIG",
    default="example-config.yml",
    show_default=True,
    help="pygeoapi config file [env: PYGEOAPI_CONFIG].",
)
@click.option(
    "--pool",
    "pools",
    multiple=True,
    help="A work pool to check too (exists, not paused, an online worker), e.g. "
    "before deploying to it; repeatable.",
)
def doctor(config: Path, pools: tuple[str, ...]) -> None:
    """Check a set-up and say what is wrong and how to fix it.

    Checks that the config exists and its server.manager block is valid;
    that the Prefect API answers; that the work pool of every deployment
    the processes run on (configured, or published with publish.enabled)
    exists, is not paused and has an online worker; that the result store
    can be written, read back and deleted from; and that every process
    loads. Exits with 1 if any check failed.
    """
    from pygeoapi_prefect.cli.doctor import run_checks

    failed = 0
    for check in run_checks(config, pools):
        mark = click.style("ok  ", fg="green") if check.ok else click.style("FAIL", fg="red")
        click.echo(f"{mark} {check.name}: {check.detail}")
        if not check.ok:
            failed += 1
            click.echo(f"     fix: {check.fix}")
    if failed:
        raise click.ClickException(f"{failed} check(s) failed")
    click.echo("all good")


if __name__ == "__main__":  # pragma: no cover
    cli()
