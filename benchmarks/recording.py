"""A hello-world process that notes each run, for the burst's once-only check.

Each execution appends its ``name`` input as one line to the file named by
``BENCH_RAN_FILE`` (appends this small are atomic), so the benchmark can
tell a lost job (a name never written) from one run twice (a name written
twice).
"""

from __future__ import annotations

import os
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
