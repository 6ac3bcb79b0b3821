"""A short-lived cache of job counts (``numberMatched`` of the job list).

Prefect counts flow runs by their tags, which on SQLite means reading the
tags of every run: at 10,000 jobs the count costs several times the page
itself (benchmarks/README.md). With ``job_count_cache_seconds`` set, a count
is reused for that long per filter, so ``numberMatched`` may lag that far
behind; 0 (the default) counts on every request.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

__all__ = ["CountCache"]

#: Filters remembered at most (each distinct filter of GET /jobs is one).
MAX_ENTRIES = 256


class CountCache:
    """Counts per filter, each kept ``seconds`` (nothing is kept when 0)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._counts: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def key(flow_runs: dict[str, Any]) -> str:
        """The cache key of a ``FlowRunFilter`` body."""
        return json.dumps(flow_runs, sort_keys=True, default=str)

    def get(self, key: str) -> int | None:
        """The count stored for ``key`` if it is fresh enough."""
        if self.seconds <= 0:
            return None
        with self._lock:
            found = self._counts.get(key)
        if found is None or found[0] < time.monotonic():
            return None
        return found[1]

    def put(self, key: str, count: int) -> None:
        """Remember a count just made."""
        if self.seconds <= 0:
            return
        now = time.monotonic()
        with self._lock:
            if len(self._counts) >= MAX_ENTRIES:
                self._counts = {k: v for k, v in self._counts.items() if v[0] >= now}
                if len(self._counts) >= MAX_ENTRIES:
                    self._counts.clear()
            self._counts[key] = (now + self.seconds, count)
