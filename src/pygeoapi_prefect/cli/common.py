"""Pieces the commands of the ``pygeoapi-prefect`` command line share."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import click

from pygeoapi_prefect.errors import ConfigError

__all__ = ["Stop", "config_errors", "config_option", "examples", "raise_stop", "waiting_for"]


@contextmanager
def config_errors(config: Path) -> Iterator[None]:
    """Turn a :class:`ConfigError` into a click error naming the file (no traceback)."""
    try:
        yield
    except ConfigError as exc:
        raise click.ClickException(f"{config}: {exc}") from exc


config_option = click.option(
    "--config",
    "config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="PYGEOAPI_CONFIG",
    default="example-config.yml",
    show_default=True,
    help="pygeoapi config file [env: PYGEOAPI_CONFIG].",
)


def examples(*lines: str) -> str:
    """An ``Examples:`` epilog, shown after the options by ``--help``."""
    # \b keeps click from rewrapping the lines.
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


class Stop(Exception):
    """Raised in the main thread by SIGTERM (see :func:`raise_stop`)."""


def raise_stop(signum: int, frame: FrameType | None) -> None:
    """A signal handler that raises :class:`Stop`."""
    raise Stop()


def waiting_for(url: str) -> Callable[[float], None]:
    """Progress of a wait for the Prefect server at ``url``, on stderr."""

    def waiting(seconds: float) -> None:
        click.echo(f"  still waiting for the Prefect server at {url} ({seconds:.0f} s)", err=True)

    return waiting
