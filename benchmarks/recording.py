"""Benchmark processes: hello-world that notes each run, and one that sleeps.

Each execution appends its ``name`` input as one line to the file named by
``BENCH_RAN_FILE`` (appends this small are atomic), so the benchmark can
tell a lost job (a name never written) from one run twice (a name written
twice).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from pygeoapi.process.hello_world import HelloWorldProcessor


class RecordingHelloWorld(HelloWorldProcessor):  # type: ignore[misc]
    """``hello-world``, noting each run's ``name`` in ``BENCH_RAN_FILE``."""

    def execute(self, data: dict[str, Any], outputs: dict[str, Any] | None = None) -> Any:
        path = os.environ.get("BENCH_RAN_FILE")
        if path:
            with open(path, "a", encoding="utf-8") as ran:
                ran.write(f"{data.get('name')}\n")
        return super().execute(data, outputs)


class Sleeper(RecordingHelloWorld):
    """``hello-world`` that first sleeps ``seconds`` (an I/O-bound job).

    It notes its ``name`` and its process id (``name pid``) in
    ``BENCH_PIDS_FILE`` when it starts, so the benchmark can tell when a
    dismissed job's process is gone.
    """

    def __init__(self, processor_def: dict[str, Any]) -> None:
        super().__init__(processor_def)
        self.metadata = json.loads(json.dumps(self.metadata))
        self.metadata["id"] = self.metadata["title"] = "sleeper"
        self.metadata["inputs"]["seconds"] = {
            "title": "seconds",
            "schema": {"type": "number", "minimum": 0, "maximum": 600},
            "minOccurs": 0,
            "maxOccurs": 1,
        }

    def execute(self, data: dict[str, Any], outputs: dict[str, Any] | None = None) -> Any:
        path = os.environ.get("BENCH_PIDS_FILE")
        if path:
            with open(path, "a", encoding="utf-8") as pids:
                pids.write(f"{data.get('name')} {os.getpid()}\n")
        time.sleep(float(data.get("seconds", 1)))
        return super().execute({"name": data.get("name")}, outputs)
