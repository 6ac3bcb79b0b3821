"""The ``hi-prefect-world`` example process: a Prefect flow published as an OGC process."""

from __future__ import annotations

from prefect import flow


@flow(name="hi-prefect-world", version="1.0.0")
def hi_prefect_world(name: str, message: str = "") -> str:
    """Say hi from Prefect.

    A Prefect flow published as an OGC API process by pygeoapi-prefect: its
    description, inputs and outputs come from this signature and docstring.

    Args:
        name: Who to greet.
        message: An optional message to add.
    """
    return f"Hi from Prefect, {name}! {message}".strip()
