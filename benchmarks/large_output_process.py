"""The process of benchmarks/large_outputs.py: writes ``megabytes`` MiB through the outputs API."""

from __future__ import annotations

from typing import Any

from pygeoapi.process.base import BaseProcessor

BLOCK = bytes(range(256)) * 4096  # 1 MiB


class LargeOutput(BaseProcessor):
    """Streams ``megabytes`` MiB as output ``data``, a MiB at a time (never held whole)."""

    def __init__(self, processor_def: dict[str, Any]) -> None:
        super().__init__(
            processor_def,
            {
                "version": "1.0.0",
                "id": "large-output",
                "title": "large output",
                "description": "writes megabytes MiB to the result store",
                "jobControlOptions": ["async-execute"],
                "keywords": [],
                "links": [],
                "inputs": {"megabytes": {"schema": {"type": "integer"}, "minOccurs": 1}},
                "outputs": {"data": {"schema": {"type": "string", "contentEncoding": "binary"}}},
            },
        )

    def execute(self, data: dict[str, Any], outputs: Any = None) -> tuple[str, Any]:
        from pygeoapi_prefect import outputs as job_outputs

        with job_outputs.open("data", "application/octet-stream") as sink:
            for _ in range(int(data["megabytes"])):
                sink.write(BLOCK)
        return "application/json", None


class TwoLargeOutputs(BaseProcessor):
    """Streams ``megabytes`` MiB as each of outputs ``first`` and ``second``.

    The process of benchmarks/multipart.py.
    """

    def __init__(self, processor_def: dict[str, Any]) -> None:
        binary = {"schema": {"type": "string", "contentEncoding": "binary"}}
        super().__init__(
            processor_def,
            {
                "version": "1.0.0",
                "id": "two-large-outputs",
                "title": "two large outputs",
                "description": "writes megabytes MiB twice to the result store",
                "jobControlOptions": ["sync-execute", "async-execute"],
                "keywords": [],
                "links": [],
                "inputs": {"megabytes": {"schema": {"type": "integer"}, "minOccurs": 1}},
                "outputs": {"first": binary, "second": binary},
            },
        )

    def execute(self, data: dict[str, Any], outputs: Any = None) -> tuple[str, Any]:
        from pygeoapi_prefect import outputs as job_outputs

        for output_id in ("first", "second"):
            with job_outputs.open(output_id, "application/octet-stream") as sink:
                for _ in range(int(data["megabytes"])):
                    sink.write(BLOCK)
        return "application/json", None
