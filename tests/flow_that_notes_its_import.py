"""A flow whose module notes which process imported it (test_seed.py)."""

from __future__ import annotations

import os

from prefect import flow

NOTES = "PYGEOAPI_PREFECT_TEST_IMPORT_NOTES"

if os.environ.get(NOTES):
    with open(os.environ[NOTES], "a", encoding="utf-8") as notes:
        notes.write(f"{os.getpid()}\n")


@flow(name="noted")
def noted(n: int = 0) -> int:
    """Gives ``n`` back."""
    return n
