"""The ``pygeoapi-prefect`` command line (entry point ``pygeoapi_prefect.cli:cli``)."""

from pygeoapi_prefect.cli.main import cli

__all__ = ["cli"]
