"""Memory dumps from inside a benchmarked server, on a signal (benchmarks only, never the product).

A server started with ``BENCH_MEMORY_DUMPS=<folder>`` in its environment
(``benchmarks/core.py`` and ``benchmarks/sync_memory.py`` pass it to the
werkzeug server they start) runs :func:`install`: it starts
:mod:`tracemalloc` and, on ``SIGUSR1``, writes ``<folder>/<n>.snapshot``
(a :class:`tracemalloc.Snapshot`) and ``<folder>/<n>.json``: the live
objects by type (after a full collection), the threads, the traced
memory and the RSS. ``SIGUSR2`` calls glibc's ``malloc_trim(0)`` first and
records the RSS before and after it: what the allocator held but no object
used.
"""

from __future__ import annotations

import collections
import ctypes
import gc
import json
import os
import signal
import threading
import tracemalloc
from pathlib import Path
from types import FrameType

__all__ = ["install"]


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _dump(folder: Path, trim: bool) -> None:
    count = len(list(folder.glob("*.json")))
    gc.collect()
    facts: dict[str, object] = {"rss_kib": _rss_kib()}
    if trim:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        facts["rss_kib_after_trim"] = _rss_kib()
    current, peak = tracemalloc.get_traced_memory()
    by_type = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
    facts |= {
        "traced": current,
        "traced_peak": peak,
        "threads": sorted(t.name for t in threading.enumerate()),
        "objects": dict(by_type),
        "gc_objects": sum(by_type.values()),
    }
    tracemalloc.take_snapshot().dump(str(folder / f"{count}.snapshot"))
    (folder / f"{count}.json").write_text(json.dumps(facts))
    (folder / f"{count}.done").touch()


def install(folder: str) -> None:
    """Trace allocations from now on; dump on SIGUSR1 (SIGUSR2: after a malloc_trim)."""
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    tracemalloc.start(int(os.environ.get("BENCH_TRACEMALLOC_FRAMES", "12")))

    def handler(signum: int, frame: FrameType | None) -> None:
        # Off the signal handler: the main thread may hold a lock a dump needs.
        threading.Thread(target=_dump, args=(target, signum == signal.SIGUSR2)).start()

    signal.signal(signal.SIGUSR1, handler)
    signal.signal(signal.SIGUSR2, handler)
