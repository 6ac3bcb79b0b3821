"""``python -m pygeoapi_prefect.cli``."""

from pygeoapi_prefect.cli.main import cli

cli()
