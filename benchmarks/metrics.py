"""The cost of metrics: sync execute and async submit, metrics on against off, same run.

    .venv/bin/python benchmarks/metrics.py [--rounds 8] [--repeat 30]
                                           [--server gunicorn|werkzeug] [--workers 2]

Starts one Prefect server and two pygeoapi servers side by side on it, the
same but for ``server.manager.metrics.enabled`` (the one with metrics in
multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR`` set, when served by gunicorn
as ``pygeoapi-prefect serve`` runs it). Each round measures the median of
``--repeat`` sync executes of ``hello-world``, then of async submits (the
201), on both servers, in alternating order, so that the machine's load
drifts over both alike; then as many requests again, in pairs sent back
to back to both servers (alternating which goes first). The table gives the
median over the rounds, the difference on - off by round and by request
pair, and a scrape of the "on" server at the end. Also the
cost of one hook call in this process (``job_submitted``, a watched run, a
Prefect call), with values in memory and in multiprocess mode's files.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from core import execute, log, median_ms, start_lean_prefect, start_pygeoapi  # noqa: E402

import pygeoapi_prefect.metrics as metrics  # noqa: E402


def hook_costs_us() -> dict[str, float]:
    """Microseconds per hook call in this process, metrics on."""
    metrics.enable()

    def watched() -> None:
        with metrics.watch("hello-world"):
            pass

    def prefect_call() -> None:
        with metrics.prefect_call("POST", "/flow_runs/0b8f6f0e-5c2a-4bb1-9d1c-3c6bde1d2f10/labels"):
            pass

    calls = {
        "job_submitted": lambda: metrics.job_submitted("hello-world", "sync"),
        "watch (queue, run)": watched,
        "prefect_call": prefect_call,
    }
    number = 20_000
    return {
        name: min(timeit.repeat(call, number=number, repeat=5)) / number * 1e6
        for name, call in calls.items()
    }


#: Answers other than 200/201 per server (timed like the others, and reported).
REFUSED: dict[str, int] = {"on": 0, "off": 0}


def sent(client: httpx.Client, asynchronous: bool, name: str) -> None:
    try:
        execute(client, asynchronous=asynchronous)
    except httpx.HTTPStatusError:
        REFUSED[name] += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8, help="alternating rounds")
    parser.add_argument("--repeat", type=int, default=30, help="requests per median")
    parser.add_argument("--server", choices=("gunicorn", "werkzeug"), default="gunicorn")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--hooks-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hooks_only:  # the multiprocess-mode hook costs, in a child with the folder set
        print(json.dumps(hook_costs_us()))
        return

    work = Path(tempfile.mkdtemp(prefix="pygeoapi-prefect-bench-metrics-"))
    prefect = start_lean_prefect(work)
    base_env = dict(os.environ) | {
        "PREFECT_API_URL": prefect.api_url,
        "PREFECT_HOME": str(work / "home"),
    }
    base_env.pop(metrics.MULTIPROC_ENV, None)
    servers: dict[str, tuple[object, str]] = {}
    try:
        for name, enabled in (("on", True), ("off", False)):
            folder = work / name
            folder.mkdir()
            env = dict(base_env)
            if enabled and args.server == "gunicorn":
                env[metrics.MULTIPROC_ENV] = str(folder / "prometheus")
                metrics.prepare_multiprocess_dir(env[metrics.MULTIPROC_ENV])
            manager = {
                "name": "pygeoapi_prefect.manager.PrefectManager",
                "results": {"url": str(folder / "results")},
                "metrics": {"enabled": enabled},
                # Room for a loaded machine: a 503 would end the run.
                "api_timeout": 15,
            }
            workers = args.workers if args.server == "gunicorn" else 1
            servers[name] = start_pygeoapi(
                folder,
                manager,
                "pygeoapi_prefect.flask_app",
                env,
                server=args.server,
                workers=workers,
            )
        clients = {n: httpx.Client(base_url=url, timeout=60) for n, (_, url) in servers.items()}
        for client in clients.values():  # warm-up: imports, pools, every worker
            for _ in range(3 * args.workers):
                execute(client)
                execute(client, asynchronous=True)
        results: dict[tuple[str, str], list[float]] = {}
        #: Per request pair (on and off back to back, in alternating order): on - off.
        pairs: dict[str, list[float]] = {}
        for number in range(args.rounds):
            for what, asynchronous in (("sync execute", False), ("async submit", True)):
                for name in ("on", "off") if number % 2 == 0 else ("off", "on"):
                    client = clients[name]
                    median = median_ms(
                        lambda c=client, a=asynchronous, n=name: sent(c, a, n), args.repeat
                    )
                    results.setdefault((what, name), []).append(median)
                for index in range(args.repeat):
                    took = {}
                    for name in ("on", "off") if index % 2 == 0 else ("off", "on"):
                        started = time.perf_counter()
                        sent(clients[name], asynchronous, name)
                        took[name] = (time.perf_counter() - started) * 1000
                    pairs.setdefault(what, []).append(took["on"] - took["off"])
            log(f"round {number + 1}/{args.rounds} done")
        scraped = clients["on"].get("/metrics")
        submitted = sum(
            float(line.rsplit(" ", 1)[1])
            for line in scraped.text.splitlines()
            if line.startswith("pygeoapi_prefect_jobs_submitted_total")
        )
        off_status = clients["off"].get("/metrics").status_code
    finally:
        for process, _ in servers.values():
            process.terminate()  # type: ignore[attr-defined]
            process.wait(30)  # type: ignore[attr-defined]
        prefect.stop()

    print(
        f"\n{args.server}, {args.workers if args.server == 'gunicorn' else 1} worker(s), "
        f"{args.rounds} rounds x {args.repeat} requests (median of the round medians)\n"
    )
    print(
        "| measure | metrics off (ms) | metrics on (ms) | on / off "
        "| on - off, paired by round: median [min, max] (ms) "
        "| on - off, request pairs: median [quartiles] (ms) |"
    )
    print("|---|---:|---:|---:|---|---|")
    for what in ("sync execute", "async submit"):
        on = statistics.median(results[(what, "on")])
        off = statistics.median(results[(what, "off")])
        paired = [a - b for a, b in zip(results[(what, "on")], results[(what, "off")], strict=True)]
        low, middle, high = statistics.quantiles(pairs[what], n=4)
        print(
            f"| {what} | {off:.1f} | {on:.1f} | {on / off:.3f} "
            f"| {statistics.median(paired):+.1f} [{min(paired):+.1f}, {max(paired):+.1f}] "
            f"| {middle:+.1f} [{low:+.1f}, {high:+.1f}], n={len(pairs[what])} |"
        )
    print(
        f"\nthe 'on' server counted {submitted:.0f} submitted jobs; "
        f"/metrics of the 'off' one answered {off_status}"
    )
    print(f"answers other than 200/201 (a loaded Prefect on SQLite): {REFUSED}")
    print("\nOne hook call (microseconds; in-memory values | multiprocess mode, mmap files):\n")
    in_memory = hook_costs_us()
    with tempfile.TemporaryDirectory() as folder:
        child = subprocess.run(
            [sys.executable, __file__, "--hooks-only"],
            env=dict(os.environ) | {metrics.MULTIPROC_ENV: folder},
            capture_output=True,
            text=True,
            check=True,
        )
    in_files = json.loads(child.stdout)
    for name, micros in in_memory.items():
        print(f"- {name}: {micros:.1f} | {in_files[name]:.1f}")
    log(f"work folder {work}; {time.strftime('%Y-%m-%d %H:%M')}")


if __name__ == "__main__":
    main()
