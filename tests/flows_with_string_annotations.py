"""A flow module as users write them: string annotations, a model, an async flow."""

from __future__ import annotations

from prefect import flow
from pydantic import BaseModel


class Box(BaseModel):
    west: float
    east: float


@flow(name="width")
def width(box: Box, scale: float = 1.0) -> float:
    """Width of a box."""
    return (box.east - box.west) * scale


@flow(name="async-width")
async def async_width(box: Box) -> float:
    """Width of a box, asynchronously."""
    return box.east - box.west
