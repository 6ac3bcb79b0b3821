"""The job watcher: how late an end made outside pygeoapi is seen, and what a pass costs.

Starts a Prefect server and ``--replicas`` watchers of one config (as the
server processes of one pygeoapi would run them: each tries every period
at a jittered moment), then crashes ``--ends`` runs at once through the
Prefect API (as the zombie automation does) and reports, with the watch
settings given: the delay from each crash to the moment a watcher handled
it, and the time of a pass that lost the election and of one that read a
window. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path

from pygeoapi_prefect.config import load_config
from pygeoapi_prefect.execution.engine import Engine
from pygeoapi_prefect.execution.watcher import End, Watcher
from pygeoapi_prefect.prefect.api import PrefectAPI
from pygeoapi_prefect.prefect.server import PrefectServer, free_port
from pygeoapi_prefect.prefect.states import state

PROCESS = "bench-watched"


class Timed(Watcher):
    """A watcher that notes when it handled each job's end, and how long its passes took."""

    def __init__(self, engine: Engine, seen: dict[str, float]) -> None:
        super().__init__(engine)
        self.seen = seen
        self.lost: list[float] = []
        self.won: list[float] = []

    def handle(self, end: End) -> bool:
        self.seen.setdefault(end.job_id, time.time())
        return super().handle(end)

    def timed_pass(self) -> None:
        started = time.perf_counter()
        handled = self.pass_once()
        (self.lost if handled is None else self.won).append(time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--ends", type=int, default=200)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--settle", type=float, default=10.0)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-watcher-"))
    server = PrefectServer(home, port=free_port())
    server.start(timeout=120)
    stop = threading.Event()
    seen: dict[str, float] = {}
    try:
        config = load_config(
            {
                "name": "pygeoapi_prefect.manager.PrefectManager",
                "connection": server.api_url,
                "results": {"url": str(home / "results")},
                "metrics": {"enabled": False},
                "watch": {"enabled": True, "interval": args.interval, "settle": args.settle},
                "processes": {PROCESS: {"processor": {"name": "HelloWorld"}}},
            }
        )
        watchers = [Timed(Engine(config), seen) for _ in range(args.replicas)]

        def loop(watcher: Timed) -> None:
            while not stop.wait(args.interval * random.uniform(0.5, 1.0)):
                watcher.timed_pass()

        threads = [threading.Thread(target=loop, args=(w,), daemon=True) for w in watchers]
        for thread in threads:
            thread.start()
        api = PrefectAPI(server.api_url, timeout=30)
        crashed: dict[str, float] = {}
        for _ in range(args.ends):
            run = api.create_flow_run(
                flow_name=PROCESS,
                state=state("RUNNING", "Job running"),
                tags=["pygeoapi", f"pygeoapi.process:{PROCESS}"],
                labels={},
                parameters={},
            )
            job_id = str(run["id"])
            api.set_state(job_id, {"type": "CRASHED", "name": "Crashed"}, force=True)
            crashed[job_id] = time.time()
        deadline = time.monotonic() + args.settle + 10 * args.interval + 60
        while len(seen.keys() & crashed.keys()) < len(crashed) and time.monotonic() < deadline:
            time.sleep(0.2)
        stop.set()
        delays = sorted(seen[j] - crashed[j] for j in crashed if j in seen)
        handled = sum(w.handled for w in watchers)
        lost = [t for w in watchers for t in w.lost]
        won = [t for w in watchers for t in w.won]
        print(f"replicas {args.replicas}, interval {args.interval:g} s, settle {args.settle:g} s")
        print(f"ends crashed {len(crashed)}, seen {len(delays)}, handled in all {handled}")
        if delays:
            print(
                f"crash -> handled: min {delays[0]:.1f} s, median "
                f"{statistics.median(delays):.1f} s, max {delays[-1]:.1f} s"
            )
        if lost:
            median = statistics.median(lost) * 1000
            print(f"a lost pass (one refused variable create): median {median:.1f} ms")
        if won:
            print(
                f"a won pass: median {statistics.median(won) * 1000:.1f} ms, "
                f"max {max(won) * 1000:.1f} ms ({len(won)} passes)"
            )
        for watcher in watchers:
            watcher.close()
            watcher.engine.close()
        api.close()
    finally:
        stop.set()
        server.stop()


if __name__ == "__main__":
    main()
