"""``pygeoapi-prefect prune``: retention of finished jobs, run from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from pygeoapi_prefect.cli.common import config_errors, config_option, examples
from pygeoapi_prefect.config import RetentionConfig, parse_duration

__all__ = ["prune_command"]


def _manager(config: Path) -> Any:
    from pygeoapi.util import yaml_load

    from pygeoapi_prefect.manager import PrefectManager

    try:
        with config.open(encoding="utf-8") as handle:
            document = yaml_load(handle)
    except OSError as exc:
        raise click.ClickException(f"cannot read the pygeoapi config {config}: {exc}") from exc
    manager_def = dict((document.get("server") or {}).get("manager") or {})
    processes = {
        pid: resource
        for pid, resource in (document.get("resources") or {}).items()
        if (resource or {}).get("type") == "process"
    }
    with config_errors(config):
        return PrefectManager({**manager_def, "processes": processes})


@click.command(
    "prune",
    epilog=examples(
        "pygeoapi-prefect prune --dry-run",
        "PYGEOAPI_CONFIG=prod.yml pygeoapi-prefect prune",
        "pygeoapi-prefect prune --max-age 7d --max-jobs 100000",
    ),
)
@config_option
@click.option("--dry-run", is_flag=True, help="Count what would be pruned; delete nothing.")
@click.option(
    "--max-age",
    default=None,
    help="Override server.manager.retention.max_age (30d, 12h, 90m, 45s or seconds).",
)
@click.option(
    "--max-jobs",
    type=click.IntRange(min=0),
    default=None,
    help="Override server.manager.retention.max_jobs.",
)
def prune_command(config: Path, dry_run: bool, max_age: str | None, max_jobs: int | None) -> None:
    """Prune finished jobs past the config's retention (server.manager.retention).

    Finished jobs (successful, failed, dismissed) that ended longer ago than
    max_age, or are not among the max_jobs newest, lose their results and
    their flow runs; they answer 404 from then on. Queued and running jobs
    are never touched. Progress goes to stderr, the summary to stdout.
    """
    from pygeoapi_prefect.errors import PrefectManagerError
    from pygeoapi_prefect.execution.retention import prune

    manager = _manager(config)
    retention: RetentionConfig = manager.config.retention
    updates: dict[str, Any] = {}
    if max_age is not None:
        try:
            updates["max_age"] = parse_duration(max_age)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--max-age") from exc
    if max_jobs is not None:
        updates["max_jobs"] = max_jobs
    retention = retention.model_copy(update=updates)
    if retention.max_age is None and retention.max_jobs is None:
        raise click.ClickException(
            f"{config}: nothing to prune: set server.manager.retention.max_age or max_jobs "
            "(or pass --max-age / --max-jobs)"
        )
    engine = manager.engine
    try:
        report = prune(
            engine.api,
            engine.store,
            list(engine.processes()),
            retention,
            dry_run=dry_run,
            progress=lambda line: click.echo(f"  {line}", err=True),
        )
    except PrefectManagerError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        engine.close()
    click.echo(report.summary())
