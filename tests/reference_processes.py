"""Processes of the data-by-reference tests: several outputs, streamed outputs, inputs inspected."""

from __future__ import annotations

import hashlib
from typing import Any

from pygeoapi.process.base import BaseProcessor


def _metadata(process_id: str, inputs: dict[str, Any], outputs: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": "1.0.0",
        "id": process_id,
        "title": process_id,
        "description": f"test process {process_id}",
        "jobControlOptions": ["sync-execute", "async-execute"],
        "keywords": [],
        "links": [],
        "inputs": inputs,
        "outputs": outputs,
    }


BLOB = b"\x89PNG\r\n\x1a\n" + bytes(range(256))


class MultiProcessor(BaseProcessor):
    """Three outputs of three kinds: text, JSON and bytes."""

    def __init__(self, processor_def: dict[str, Any]) -> None:
        outputs = {
            "text": {"title": "text", "schema": {"type": "string"}},
            "numbers": {"title": "numbers", "schema": {"type": "array"}},
            "blob": {"title": "blob", "schema": {"type": "string", "contentEncoding": "binary"}},
        }
        super().__init__(processor_def, _metadata("multi", {}, outputs))

    def execute(self, data: dict[str, Any], outputs: Any = None) -> tuple[str, Any]:
        return "image/png", {"text": "hello", "numbers": [1, 2, 3], "blob": BLOB}


class MapProcessor(BaseProcessor):
    """Two outputs returned as one JSON map (what pygeoapi's managers answer raw as it is)."""

    def __init__(self, processor_def: dict[str, Any]) -> None:
        outputs = {
            "greeting": {"title": "greeting", "schema": {"type": "string"}},
            "numbers": {"title": "numbers", "schema": {"type": "object"}},
        }
        super().__init__(processor_def, _metadata("map", {}, outputs))

    def execute(self, data: dict[str, Any], outputs: Any = None) -> tuple[str, Any]:
        # "<" and non-ASCII: pygeoapi's to_json escapes the one and keeps the other escaped.
        return "application/json", {"greeting": "héllo <world>", "numbers": {"b": [1, 2], "a": 0.5}}


def pattern(megabytes: int) -> bytes:
    """The bytes StreamProcessor writes, for a check (1 MiB a block)."""
    return bytes(range(256)) * 4096 * megabytes


class StreamProcessor(BaseProcessor):
    """Writes ``megabytes`` MiB as output ``data`` through pygeoapi_prefect.outputs, and a note."""

    def __init__(self, processor_def: dict[str, Any]) -> None:
        # A string: the OGC 1.0 schema's oneOf cannot tell an integer from a number.
        number = {"type": "string", "pattern": "^[0-9]+$"}
        inputs = {"megabytes": {"schema": number, "minOccurs": 0}}
        outputs = {
            "data": {"title": "data", "schema": {"type": "string", "contentEncoding": "binary"}},
            "note": {"title": "note", "schema": {"type": "string"}},
        }
        super().__init__(processor_def, _metadata("stream", inputs, outputs))

    def execute(self, data: dict[str, Any], outputs: Any = None) -> tuple[str, Any]:
        from pygeoapi_prefect import outputs as job_outputs

        block = bytes(range(256)) * 4096
        with job_outputs.open("data", "application/x-test") as sink:
            for _ in range(int(data.get("megabytes", 1))):
                sink.write(block)
        with job_outputs.open("note", "text/plain") as note:
            note.write(b"written by the process")
        return "application/json", None


INSPECT_INPUTS = {
    "text": {"schema": {"type": "string", "maxLength": 1000}, "minOccurs": 0},
    "blob": {
        "schema": {
            "type": "string",
            "contentEncoding": "binary",
            "contentMediaType": "application/octet-stream",
        },
        "minOccurs": 0,
    },
    "doc": {
        "schema": {
            "type": "object",
            "properties": {"n": {"type": "integer"}},
            "required": ["n"],
        },
        "minOccurs": 0,
    },
    "cog": {"schema": {"type": "string", "contentMediaType": "image/tiff"}, "minOccurs": 0},
}


class InspectProcessor(BaseProcessor):
    """Says what it received for each input (type, length, digest, value)."""

    def __init__(self, processor_def: dict[str, Any]) -> None:
        outputs = {"result": {"title": "result", "schema": {"type": "object"}}}
        super().__init__(processor_def, _metadata("inspect", INSPECT_INPUTS, outputs))

    def execute(self, data: dict[str, Any], outputs: Any = None) -> tuple[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in data.items():
            entry: dict[str, Any] = {"type": type(value).__name__}
            if isinstance(value, bytes):
                entry["length"] = len(value)
                entry["sha256"] = hashlib.sha256(value).hexdigest()
            else:
                entry["value"] = value
            seen[key] = entry
        return "application/json", {"id": "result", "value": seen}


def _flow() -> Any:
    from prefect import flow

    @flow(name="streamed-flow", version="1.0.0")
    def streamed_flow(megabytes: int = 1, greeting: str = "") -> None:
        """A Prefect flow that writes its output through pygeoapi_prefect.outputs.

        Args:
            megabytes: How many MiB to write as output ``data``.
            greeting: Text (may come by reference) written as output ``greeting``.
        """
        from pygeoapi_prefect import outputs as job_outputs

        block = bytes(range(256)) * 4096
        with job_outputs.open("data", "application/x-test") as sink:
            for _ in range(megabytes):
                sink.write(block)
        with job_outputs.open("greeting", "text/plain") as sink:
            sink.write(greeting.encode())

    return streamed_flow


streamed_flow = _flow()


#: The processor block of the flow, with the outputs it writes declared.
STREAMED_FLOW = {
    "name": "pygeoapi_prefect.processes.FlowProcessor",
    "flow": "reference_processes:streamed_flow",
    "metadata": {
        "outputs": {
            "data": {"title": "data", "schema": {"type": "string", "contentEncoding": "binary"}},
            "greeting": {"title": "greeting", "schema": {"type": "string"}},
        }
    },
}
