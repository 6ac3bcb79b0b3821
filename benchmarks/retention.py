"""Pruning many finished jobs, and what it does to request latency meanwhile.

Starts a Prefect server and one pygeoapi server (PrefectManager), stores
``--jobs`` finished jobs of ``hello-world`` (runs through the REST API, and a
small result in the store for each), measures ``GET /jobs?limit=10`` and a
sync ``hello-world`` execute while idle, then runs ``pygeoapi-prefect prune
--max-jobs 0`` and measures the same two requests, round after round, until
the prune ends. Prints one table. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from core import fill_prefect, log, start_pygeoapi  # noqa: E402

from pygeoapi_prefect.prefect.api import PrefectAPI  # noqa: E402
from pygeoapi_prefect.prefect.server import UNUSED_SERVICES, PrefectServer, free_port  # noqa: E402


def write_results(api_url: str, results: Path) -> int:
    """A small stored result for every hello-world job run (as a real job leaves)."""
    api = PrefectAPI(api_url, timeout=60)
    written, offset = 0, 0
    try:
        while True:
            page = api.filter_flow_runs(
                {"tags": {"all_": ["pygeoapi", "pygeoapi.process:hello-world"]}},
                sort="EXPECTED_START_TIME_ASC",
                limit=200,
                offset=offset,
            )
            for run in page:
                folder = results / str(run["id"])
                folder.mkdir(parents=True, exist_ok=True)
                (folder / "output").write_text('{"id": "echo", "value": "Hello bench!"}')
                (folder / "manifest.json").write_text(
                    json.dumps({"mimetype": "application/json", "encoding": "json"})
                )
                written += 1
            if len(page) < 200:
                return written
            offset += 200
    finally:
        api.close()


def sample(client: httpx.Client, what: str) -> float:
    started = time.perf_counter()
    if what == "list":
        response = client.get("/jobs", params={"limit": 10, "f": "json"})
    else:
        response = client.post(
            "/processes/hello-world/execution", json={"inputs": {"name": "bench"}}
        )
    response.raise_for_status()
    return (time.perf_counter() - started) * 1000


def round_of(client: httpx.Client, samples: dict[str, list[float]]) -> None:
    for what in ("list", "execute"):
        samples[what].append(sample(client, what))


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000, help="finished jobs to prune")
    parser.add_argument("--repeat", type=int, default=30, help="idle samples of each request")
    parser.add_argument("--lean-prefect", action="store_true", help="Prefect without its extras")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="pygeoapi-prefect-retention-"))
    prefect = PrefectServer(
        work / "prefect-home",
        port=free_port(),
        disabled_services=UNUSED_SERVICES if args.lean_prefect else (),
    )
    log(f"starting a Prefect server in {work} ...")
    prefect.start(timeout=120)
    env = dict(os.environ) | {"PREFECT_API_URL": prefect.api_url, "PREFECT_HOME": str(work / "h")}
    results = work / "results"
    manager = {
        "name": "pygeoapi_prefect.manager.PrefectManager",
        "connection": prefect.api_url,
        "results": {"url": str(results)},
    }
    process, url = start_pygeoapi(work, manager, "pygeoapi_prefect.flask_app", env)
    try:
        log(f"storing {args.jobs} finished jobs ...")
        fill_prefect(prefect.api_url, args.jobs)
        stored = write_results(prefect.api_url, results)
        log(f"{stored} jobs with results stored")
        client = httpx.Client(base_url=url, timeout=60)
        idle: dict[str, list[float]] = {"list": [], "execute": []}
        for _ in range(3):
            round_of(client, {"list": [], "execute": []})  # warm-up
        for _ in range(args.repeat):
            round_of(client, idle)

        log("pruning (pygeoapi-prefect prune --max-jobs 0) ...")
        during: dict[str, list[float]] = {"list": [], "execute": []}
        done = threading.Event()
        outcome: dict[str, str] = {}

        def run_prune() -> None:
            answer = subprocess.run(
                [sys.executable, "-m", "pygeoapi_prefect.cli", "prune", "--max-jobs", "0"],
                env=env | {"PYGEOAPI_CONFIG": str(work / "config.yml")},
                capture_output=True,
                text=True,
                check=False,
            )
            outcome["stdout"], outcome["stderr"] = answer.stdout, answer.stderr
            done.set()

        started = time.monotonic()
        thread = threading.Thread(target=run_prune)
        thread.start()
        time.sleep(3.0)  # the command's own start-up (imports) is not the prune
        while not done.is_set():
            round_of(client, during)
        wall = time.monotonic() - started
        thread.join()
        summary = outcome.get("stdout", "").strip()
        if not summary.startswith("pruned"):
            raise RuntimeError(f"prune failed: {outcome}")
        match = re.search(r"pruned (\d+) finished job\(s\) in ([\d.]+) s", summary)
        pruned, seconds = (int(match.group(1)), float(match.group(2))) if match else (0, wall)
        left = len([p for p in results.iterdir()]) if results.exists() else 0

        print()
        print(f"| prune of {args.jobs} finished jobs | value |")
        print("|---|---|")
        print(f"| jobs pruned (runs and results) | {pruned} |")
        print(f"| result folders left | {left} |")
        print(f"| prune time (the command's own, without start-up) | {seconds:.1f} s |")
        print(f"| jobs per second | {pruned / seconds:.0f} |")
        print()
        print("| request | idle median | idle p95 | during prune median | during prune p95 | n |")
        print("|---|---|---|---|---|---|")
        for what, label in (("list", "GET /jobs?limit=10"), ("execute", "sync execute")):
            a, b = idle[what], during[what]
            if not b:
                b = [float("nan")]
            print(
                f"| {label} | {statistics.median(a):.1f} ms | {p95(a):.1f} ms | "
                f"{statistics.median(b):.1f} ms | {p95(b):.1f} ms | {len(b)} |"
            )
    finally:
        process.terminate()
        process.wait(20)
        prefect.stop()


if __name__ == "__main__":
    main()
