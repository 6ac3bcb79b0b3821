"""Where a PrefectManager server's memory goes per request: tracemalloc diffs between samples.

    .venv/bin/python benchmarks/sync_memory.py [--kind sync|async|list|status|delete]
                                               [--jobs 500] [--rounds 2] [--clients 4]
                                               [--top 15]

Starts a lean Prefect server and one pygeoapi server (werkzeug, threaded,
``pygeoapi_prefect.flask_app:APP``, as ``core.py`` does) with
``BENCH_MEMORY_DUMPS`` set (``memdump.py``: tracemalloc from the start,
dumps on a signal). Warms up with ``--jobs`` requests of ``--kind``, then
takes a sample after each of ``--rounds`` further rounds of ``--jobs``
requests from ``--clients`` threads (each on its own keep-alive connection),
and a last one after ``malloc_trim(0)``. Prints per round the RSS, the
memory tracemalloc traces, the live objects, the threads; then the
allocation sites that grew most between the first and the last sample and
the object types whose count grew. Retained objects show in the traced
memory and the counts; allocator or thread-stack high-water shows only in
the RSS (and what ``malloc_trim`` gives back).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import signal
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from core import execute, job_id_of, log, start_pygeoapi, wait_done  # noqa: E402

from pygeoapi_prefect.prefect.server import UNUSED_SERVICES, PrefectServer, free_port  # noqa: E402

MIB = 1024 * 1024


def sample(pid: int, folder: Path, trim: bool = False) -> dict:
    index = len(list(folder.glob("*.json")))
    os.kill(pid, signal.SIGUSR2 if trim else signal.SIGUSR1)
    done = folder / f"{index}.done"
    deadline = time.monotonic() + 120
    while not done.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"no memory dump {index} from the server")
        time.sleep(0.1)
    facts = json.loads((folder / f"{index}.json").read_text())
    facts["snapshot"] = str(folder / f"{index}.snapshot")
    return facts


def requests_of(kind: str, url: str) -> Callable[[httpx.Client], str | None]:
    """One request of ``kind`` on a client (each its own job where it makes one; async: its id)."""
    if kind == "sync":
        return lambda client: execute(client) and None
    if kind == "async":
        return lambda client: job_id_of(execute(client, True))
    with httpx.Client(base_url=url, timeout=120) as client:
        job_id = job_id_of(execute(client))
    if kind == "list":
        return lambda client: (
            client.get("/jobs", params={"limit": 10, "f": "json"}).raise_for_status() and None
        )
    if kind == "status":
        return lambda client: (
            client.get(f"/jobs/{job_id}", params={"f": "json"}).raise_for_status() and None
        )

    def delete(client: httpx.Client) -> None:
        dismissed = job_id_of(execute(client))
        client.delete(f"/jobs/{dismissed}").raise_for_status()

    return delete


def run(url: str, call: Callable[[httpx.Client], str | None], count: int, clients: int) -> None:
    """``count`` calls from ``clients`` threads; then waits for the async jobs they made."""

    def one(_: int) -> list[str]:
        with httpx.Client(base_url=url, timeout=120) as client:
            return [job for job in (call(client) for _ in range(count // clients)) if job]

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        made = [job for jobs in pool.map(one, range(clients)) for job in jobs]
    if made:
        wait_done(url, made)


def top_sites(first: str, last: str, top: int) -> list[str]:
    before = tracemalloc.Snapshot.load(first)
    after = tracemalloc.Snapshot.load(last)
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
    stats = after.filter_traces(ignore).compare_to(before.filter_traces(ignore), "traceback")
    lines = []
    for stat in [stat for stat in stats if stat.size_diff > 0][:top]:
        frames = [f"{Path(f.filename).name}:{f.lineno}" for f in stat.traceback][-6:]
        lines.append(
            f"{stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+6d} blocks  "
            + " < ".join(reversed(frames))
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--kind", choices=("sync", "async", "list", "status", "delete"), default="sync"
    )
    parser.add_argument("--jobs", type=int, default=500, help="requests per round")
    parser.add_argument("--rounds", type=int, default=2, help="measured rounds after the warm-up")
    parser.add_argument("--clients", type=int, default=4, help="client threads (connections)")
    parser.add_argument("--top", type=int, default=15, help="allocation sites shown")
    parser.add_argument("--manager-option", action="append", default=[], metavar="KEY=YAML")
    args = parser.parse_args()
    import yaml

    work = Path(tempfile.mkdtemp(prefix="pygeoapi-prefect-memory-"))
    dumps = work / "dumps"
    prefect = PrefectServer(
        work / "prefect-home", port=free_port(), disabled_services=UNUSED_SERVICES
    )
    prefect.start(timeout=120)
    manager: dict = {
        "name": "pygeoapi_prefect.manager.PrefectManager",
        "results": {"url": str(work / "results")},
    }
    for option in args.manager_option:
        key, _, value = option.partition("=")
        *parents, leaf = key.split(".")
        target = manager
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = yaml.safe_load(value)
    env = dict(os.environ) | {
        "PREFECT_API_URL": prefect.api_url,
        "PREFECT_HOME": str(work / "home"),
        "BENCH_MEMORY_DUMPS": str(dumps),
    }
    process = None
    try:
        (work / "server").mkdir()
        process, url = start_pygeoapi(work / "server", manager, "pygeoapi_prefect.flask_app", env)
        call = requests_of(args.kind, url)
        # A first dump before any work: later RSS figures then include the
        # high-water of making a dump (a snapshot of every trace), as every one does.
        sample(process.pid, dumps)
        log(f"{args.kind}: warm-up of {args.jobs} ...")
        run(url, call, args.jobs, args.clients)
        samples = [sample(process.pid, dumps)]
        for index in range(args.rounds):
            log(f"{args.kind}: round {index + 1} of {args.jobs} ...")
            run(url, call, args.jobs, args.clients)
            samples.append(sample(process.pid, dumps))
        trimmed = sample(process.pid, dumps, trim=True)
    finally:
        if process is not None:
            process.terminate()
            process.wait(30)
        prefect.stop()
    first = samples[0]
    # Under tracing the RSS includes tracemalloc's own tables and the dumps'
    # high-water: the traced memory and the object counts are what count here.
    print(f"\n{args.kind}: {args.jobs} requests a round from {args.clients} clients")
    print("| after | RSS (MiB) | traced (MiB) | gc objects | threads |")
    print("|---|---|---|---|---|")
    for index, facts in enumerate(samples):
        print(
            f"| {'warm-up' if index == 0 else f'round {index}'} | {facts['rss_kib'] / 1024:.1f} "
            f"| {facts['traced'] / MIB:.2f} | {facts['gc_objects']} | {len(facts['threads'])} |"
        )
    before, after = trimmed["rss_kib"] / 1024, trimmed["rss_kib_after_trim"] / 1024
    print(
        f"| malloc_trim(0) | {before:.1f} -> {after:.1f} | {trimmed['traced'] / MIB:.2f} "
        f"| {trimmed['gc_objects']} | {len(trimmed['threads'])} |"
    )
    last = samples[-1]
    print(
        f"\nRSS growth over the {args.rounds} rounds: "
        f"{(last['rss_kib'] - first['rss_kib']) / 1024:.2f} MiB; "
        f"traced: {(last['traced'] - first['traced']) / MIB:.3f} MiB"
    )
    print("\nObject types whose count grew (warm-up -> last round):")
    grown = {k: last["objects"].get(k, 0) - first["objects"].get(k, 0) for k in last["objects"]}
    for name, diff in sorted(grown.items(), key=lambda kv: -kv[1])[: args.top]:
        if diff > 0:
            print(f"  {diff:+7d} {name}")
    print("\nAllocation sites that grew most (warm-up -> last round):")
    for line in top_sites(first["snapshot"], last["snapshot"], args.top):
        print("  " + line)
    log(f"work folder {work}")


if __name__ == "__main__":
    main()
