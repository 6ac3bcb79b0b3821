"""Example processes shipped with pygeoapi-prefect."""
