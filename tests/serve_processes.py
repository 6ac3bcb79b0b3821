"""A pygeoapi process for tests/test_serve.py: which server process ran it."""

from __future__ import annotations

import os
from typing import Any

from pygeoapi.process.base import BaseProcessor


class PidProcessor(BaseProcessor):
    """Answers the id of the process that ran it (a sync job runs in its gunicorn worker)."""

    def __init__(self, processor_def: dict[str, Any]) -> None:
        super().__init__(
            processor_def,
            {
                "version": "1.0.0",
                "id": "pid",
                "title": "pid",
                "description": "the id of the process that runs the job",
                "jobControlOptions": ["sync-execute", "async-execute"],
                "keywords": [],
                "links": [],
                "inputs": {},
                "outputs": {"pid": {"title": "pid", "schema": {"type": "integer"}}},
            },
        )

    def execute(self, data: dict[str, Any], outputs: Any = None) -> tuple[str, Any]:
        return "application/json", {"id": "pid", "value": os.getpid()}
