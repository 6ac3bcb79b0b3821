"""Where the time of a request goes: py-spy on the pygeoapi server and on the Prefect server.

    .venv/bin/python benchmarks/profile.py [--seconds 15] [--rate 250] [--jobs 1000]

Starts a lean Prefect server and PrefectManager's pygeoapi server (werkzeug,
as ``benchmarks/core.py`` does), then, for each request kind (sync execute,
async submit, ``GET /jobs?limit=10``), one client loops over that request
while ``py-spy record -f raw`` samples both server processes (all threads,
idle ones left out on the Prefect side; the pygeoapi side's request
threads with their waits). Prints, per kind and process, the share of the samples
spent in each group of frames (the first group of the stack's innermost
frames that matches wins), the median request time and the requests made.
Needs py-spy (``pip install -e .[bench]``); run as root or with ptrace allowed.
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
from collections import Counter
from pathlib import Path
from typing import Any

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

#: Frame groups: a sample counts for the group of its innermost frame that
#: matches one (groups tried in this order for each frame).
GROUPS = [
    (
        "waiting on Prefect's answer (httpcore read)",
        ("read (httpcore/_backends", "_receive_event (httpcore", "recv_into"),
    ),
    ("sending to Prefect (httpcore write)", ("_send_request", "_send_event (httpcore")),
    ("httpx client (build request, decode)", ("httpx/", "httpcore/")),
    ("result store (fsspec)", ("fsspec/", "pygeoapi_prefect/jobs/results.py")),
    ("input validation (jsonschema)", ("jsonschema/", "referencing/")),
    ("JSON encode/decode", ("json/", "orjson")),
    ("our job code (pygeoapi_prefect)", ("pygeoapi_prefect/",)),
    ("pygeoapi's API layer", ("pygeoapi/",)),
    (
        "WSGI server and Flask (and keep-alive waits for the client's next request)",
        ("werkzeug/", "flask/", "socketserver.py", "http/server.py", "socket.py"),
    ),
    ("SQLite (aiosqlite, sqlite3)", ("aiosqlite/", "sqlite3/")),
    ("SQLAlchemy", ("sqlalchemy/",)),
    ("Prefect orchestration rules", ("prefect/server/orchestration/",)),
    ("Prefect models and API", ("prefect/server/",)),
    ("pydantic", ("pydantic/", "pydantic_core/")),
    ("FastAPI, Starlette, uvicorn", ("fastapi/", "starlette/", "uvicorn/", "anyio/")),
    ("asyncio event loop", ("asyncio/",)),
]
#: An innermost frame that waits: the thread is idle, not working for a request.
_IDLE = ("Condition.wait", "Event.wait", "Queue.get", "select", "poll (", "epoll", "accept")


def _records(raw: Path) -> list[tuple[list[str], int]]:
    # py-spy's raw format: "frame;frame;... count" per stack, outermost first;
    # a process's label (its command line) may span lines.
    records, pending = [], ""
    for line in raw.read_text(errors="replace").splitlines():
        pending += line
        stack, _, count = pending.rpartition(" ")
        if stack and count.isdigit():
            records.append((stack.split(";"), int(count)))
            pending = ""
        else:
            pending += "\n"
    return records


def summarize(raw: Path, only: str | None = None) -> tuple[int, Counter[str]]:
    """Busy samples in a ``py-spy -f raw`` file and their split by :data:`GROUPS`.

    ``only``: count the stacks with a frame containing this text (the
    request threads), leave the others out.
    """
    groups: Counter[str] = Counter()
    total = 0
    for frames, count in _records(raw):
        if only and not any(only in frame for frame in frames):
            continue
        if not only and any(idle in frames[-1] for idle in _IDLE):
            continue
        total += count
        for frame in reversed(frames):  # innermost first
            name = next(
                (name for name, needles in GROUPS if any(n in frame for n in needles)), None
            )
            if name:
                groups[name] += count
                break
        else:
            groups["other: " + frames[-1].split(" (")[0][:60]] += count
    return total, groups


def report(work: Path, rate: int) -> None:
    """Print the split of each recorded kind (from ``work``'s ``kinds.json``)."""
    for kind, facts in json.loads((work / "kinds.json").read_text()).items():
        requests, median = facts["requests"], facts["median_ms"]
        print(f"\n## {kind}: {requests} requests, median {median:.1f} ms")
        for side, only in (("pygeoapi", "run_wsgi"), ("prefect", None)):
            raw = work / f"{facts['prefix']}-{side}.txt"
            total, groups = summarize(raw, only) if raw.exists() else (0, Counter())
            per_request = total / rate / max(requests, 1) * 1000
            what = "wall time of the request threads" if only else "busy samples"
            print(f"\n{side} server: {per_request:.1f} ms of {what} per request")
            for name, count in groups.most_common(10):
                share = count / max(total, 1)
                print(f"  {100 * share:5.1f} %  {share * per_request:5.1f} ms  {name}")


def record(
    pid: int, seconds: float, rate: int, out: Path, *, subprocesses: bool = False
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            *(str(HERE.parent / ".venv/bin/py-spy"), "record", "-p", str(pid), "-f", "raw"),
            *("-o", str(out), "-d", str(int(seconds)), "-r", str(rate), "--nonblocking"),
            # `prefect server start` serves from a child process.
            *(("--subprocesses",) if subprocesses else ()),
            # The request threads' waits too (for Prefect's answers): wall time, not CPU.
            *(() if subprocesses else ("--idle",)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15, help="seconds per request kind")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples a second")
    parser.add_argument("--jobs", type=int, default=1000, help="stored jobs before the profile")
    parser.add_argument("--report", type=Path, help="only print the split of an earlier run")
    args = parser.parse_args()
    if args.report:
        report(args.report, args.rate)
        return
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
            kinds: dict[str, Any] = {}
            calls = {
                "sync execute": lambda: execute(client),
                "async submit": lambda: ids.append(
                    execute(client, True, RECORDER).headers["Location"].rsplit("/", 1)[-1]
                ),
                "GET /jobs?limit=10": lambda: client.get(
                    "/jobs", params={"limit": 10, "f": "json"}
                ).raise_for_status(),
            }
            for kind, call in calls.items():
                for _ in range(5):
                    call()
                prefix = kind.split()[0].strip("/").lower() or "list"
                outs = {"pygeoapi": work / f"{prefix}-pygeoapi.txt"}
                spies = [record(process.pid, args.seconds, args.rate, outs["pygeoapi"])]
                if prefect_pid:
                    outs["prefect"] = work / f"{prefix}-prefect.txt"
                    spies.append(
                        record(
                            prefect_pid, args.seconds, args.rate, outs["prefect"], subprocesses=True
                        )
                    )
                time.sleep(1)  # py-spy attaches
                samples = []
                deadline = time.monotonic() + args.seconds - 2
                while time.monotonic() < deadline:
                    started = time.perf_counter()
                    call()
                    samples.append(time.perf_counter() - started)
                for spy in spies:
                    try:
                        spy.wait(args.seconds + 60)
                    except subprocess.TimeoutExpired:
                        spy.terminate()  # its samples so far are in the file
                        spy.wait(10)
                kinds[kind] = {
                    "prefix": prefix,
                    "requests": len(samples),
                    "median_ms": statistics.median(samples) * 1000,
                }
                if kind == "async submit":
                    wait_done(url, ids)
        (work / "kinds.json").write_text(json.dumps(kinds))
    finally:
        process.terminate()
        process.wait(30)
        prefect.stop()
    report(work, args.rate)
    print(f"\nraw profiles in {work}", file=sys.stderr)


if __name__ == "__main__":
    main()
