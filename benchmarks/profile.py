"""Where the time of a request goes: py-spy on the pygeoapi server and on the Prefect server.

    .venv/bin/python benchmarks/profile.py [--seconds 15] [--rate 250] [--jobs 1000]

Starts a lean Prefect server and PrefectManager's pygeoapi server (werkzeug,
as ``benchmarks/core.py`` does), then, for each request kind (sync execute,
async submit, ``GET /jobs?limit=10``), one client loops over that request
while ``py-spy record -f raw`` samples both server processes (all threads,
idle ones left out). Prints, per kind and process, the share of the samples
spent in each group of frames (the first group of the stack's innermost
frames that matches wins), the median request time and the requests made.
Needs py-spy (``pip install -e .[bench]``); run as root or with ptrace allowed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from core import (  # noqa: E402
    RECORDER,
    execute,
    fill_prefect,
    start_pygeoapi,
    wait_done,
)

from pygeoapi_prefect.prefect.server import UNUSED_SERVICES, PrefectServer, free_port  # noqa: E402

#: Frame groups, innermost first: a sample counts for the first group one of
#: its frames (from the innermost out) matches.
GROUPS = [
    ("waiting on Prefect (httpcore read)", ("httpcore/_sync/http11.py:_receive",)),
    ("sending to Prefect (httpcore write)", ("httpcore/_sync/http11.py:_send",)),
    ("httpx client (build, decode)", ("httpx/",)),
    ("result store (fsspec)", ("fsspec/", "pygeoapi_prefect/jobs/results.py")),
    ("input validation (jsonschema)", ("jsonschema/", "referencing/")),
    ("our job code (pygeoapi_prefect)", ("pygeoapi_prefect/",)),
    ("pygeoapi's API layer", ("pygeoapi/",)),
    ("WSGI server and Flask", ("werkzeug/", "flask/")),
    ("SQLite (aiosqlite, sqlite3)", ("aiosqlite/", "sqlite3/")),
    ("SQLAlchemy", ("sqlalchemy/",)),
    ("Prefect orchestration rules", ("prefect/server/orchestration/",)),
    ("Prefect models and API", ("prefect/server/",)),
    ("pydantic", ("pydantic/", "pydantic_core/")),
    ("FastAPI, Starlette, uvicorn", ("fastapi/", "starlette/", "uvicorn/", "anyio/")),
    ("asyncio event loop", ("asyncio/",)),
]


def summarize(raw: Path) -> tuple[int, Counter[str]]:
    """Samples in a ``py-spy -f raw`` file, and their split by :data:`GROUPS`."""
    groups: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")[::-1]  # innermost first
        if any("select" in f and ("selectors" in f or "poll" in f) for f in frames[:2]):
            continue  # an idle thread waiting for work
        total += int(count)
        for name, needles in GROUPS:
            if any(needle in frame for frame in frames for needle in needles):
                groups[name] += int(count)
                break
        else:
            groups["other: " + frames[0].split(" (")[0][:60]] += int(count)
    return total, groups


def record(pid: int, seconds: float, rate: int, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            *(str(HERE.parent / ".venv/bin/py-spy"), "record", "-p", str(pid), "-f", "raw"),
            *("-o", str(out), "-d", str(int(seconds)), "-r", str(rate), "--nonblocking"),
            "--subprocesses",  # `prefect server start` serves from a child process
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15, help="seconds per request kind")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples a second")
    parser.add_argument("--jobs", type=int, default=1000, help="stored jobs before the profile")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pygeoapi-prefect-profile-"))
    prefect = PrefectServer(
        work / "prefect-home", port=free_port(), disabled_services=UNUSED_SERVICES
    )
    prefect.start(timeout=120)
    env = dict(os.environ) | {"PREFECT_API_URL": prefect.api_url, "PREFECT_HOME": str(work)}
    manager = {
        "name": "pygeoapi_prefect.manager.PrefectManager",
        "results": {"url": str(work / "results")},
    }
    folder = work / "prefect"
    folder.mkdir()
    process, url = start_pygeoapi(folder, manager, "pygeoapi_prefect.flask_app", env)
    try:
        fill_prefect(prefect.api_url, args.jobs)
        prefect_pid = prefect.process.pid if prefect.process else None
        with httpx.Client(base_url=url, timeout=60) as client:
            ids: list[str] = []
            kinds = {
                "sync execute": lambda: execute(client),
                "async submit": lambda: ids.append(
                    execute(client, True, RECORDER).headers["Location"].rsplit("/", 1)[-1]
                ),
                "GET /jobs?limit=10": lambda: client.get(
                    "/jobs", params={"limit": 10, "f": "json"}
                ).raise_for_status(),
            }
            for kind, call in kinds.items():
                for _ in range(5):
                    call()
                outs = {"pygeoapi": work / f"{kind[:5]}-pygeoapi.txt"}
                spies = [record(process.pid, args.seconds, args.rate, outs["pygeoapi"])]
                if prefect_pid:
                    outs["prefect"] = work / f"{kind[:5]}-prefect.txt"
                    spies.append(record(prefect_pid, args.seconds, args.rate, outs["prefect"]))
                time.sleep(1)  # py-spy attaches
                samples = []
                deadline = time.monotonic() + args.seconds - 2
                while time.monotonic() < deadline:
                    started = time.perf_counter()
                    call()
                    samples.append(time.perf_counter() - started)
                for spy in spies:
                    spy.wait(args.seconds + 30)
                print(
                    f"\n## {kind}: {len(samples)} requests,"
                    f" median {statistics.median(samples) * 1000:.1f} ms"
                )
                for side, raw in outs.items():
                    total, groups = summarize(raw) if raw.exists() else (0, Counter())
                    print(f"\n{side} server, {total} busy samples:")
                    for name, count in groups.most_common(12):
                        print(f"  {100 * count / max(total, 1):5.1f} %  {name}")
                if kind == "async submit":
                    wait_done(url, ids)
    finally:
        process.terminate()
        process.wait(30)
        prefect.stop()
    print(f"\nraw profiles in {work}", file=sys.stderr)


if __name__ == "__main__":
    main()
