"""Scale-out: the same burst on Prefect with SQLite and with PostgreSQL.

    .venv/bin/python benchmarks/scale_out.py [--jobs 200] [--clients 20] [--deployed 20]

For each database, starts a Prefect server on it, a process work pool with
two warm workers (``--limit 2``) and ``sleep`` deployed there, and two
pygeoapi instances (``api_write_concurrency: 4``, results in one local
folder): the set-up of tests/scale_out.py. Then submits ``--jobs`` async jobs
from ``--clients`` threads, alternating between the instances: local
``hello-world`` jobs, and ``--deployed`` of them ``sleep`` (0.2 s) on the
workers. Prints, per database: the answers by status code, the jobs that
ended successful, "database is locked" lines in the Prefect server's log,
the seconds until all were finished, and
how many deployed runs each worker took. Needs PostgreSQL's binaries
(``apt-get install postgresql``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))

import conftest  # noqa: E402, F401 - first: it imports the fixture modules below
from postgres import Postgres  # noqa: E402
from scale_out import ScaleOut, running  # noqa: E402

from pygeoapi_prefect.prefect.server import PrefectServer, free_port  # noqa: E402

FINISHED = ("successful", "failed", "dismissed")


def burst(set_up: ScaleOut, jobs: int, clients: int, deployed: int) -> dict[str, Any]:
    """Submit the burst, wait for every job, count what happened."""
    every = max(jobs // deployed, 1) if deployed else 0

    def submit(index: int) -> httpx.Response | None:
        server = set_up.instances[index % 2]
        try:
            if every and index % every == every - 1:
                return server.execute("sleep", {"seconds": 0.2}, asynchronous=True)
            return server.execute("hello-world", {"name": f"burst {index}"}, asynchronous=True)
        except httpx.HTTPError:
            return None  # no answer within the client's 30 s

    log = set_up.prefect.log_file
    log_start = log.stat().st_size
    started = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        responses = list(pool.map(submit, range(jobs)))
    codes = Counter(r.status_code if r is not None else "no answer" for r in responses)
    job_ids = [r.json()["jobID"] for r in responses if r is not None and r.status_code == 201]
    deployed_ids = [
        r.json()["jobID"]
        for index, r in enumerate(responses)
        if r is not None and r.status_code == 201 and every and index % every == every - 1
    ]
    statuses: Counter[str] = Counter()
    client = set_up.instances[0].client
    deadline = time.monotonic() + 600
    for job_id in job_ids:
        while time.monotonic() < deadline:
            status = client.get(f"/jobs/{job_id}", params={"f": "json"}).json().get("status")
            if status in FINISHED:
                statuses[status] += 1
                break
            time.sleep(0.1)
    seconds = time.monotonic() - started
    text = log.read_bytes()[log_start:].decode(errors="replace")
    taken: dict[str, list[str]] = {}
    deadline = time.monotonic() + 60
    while deployed_ids and time.monotonic() < deadline:
        taken = set_up.worker_of(deployed_ids)
        if set(taken) == set(deployed_ids):
            break
        time.sleep(1)
    # Runs that never ran (or whose event is missing) count as "none".
    workers = Counter(taken[run_id][0] if run_id in taken else "none" for run_id in deployed_ids)
    return {
        "answers": dict(codes),
        "successful": statuses["successful"],
        "locked": text.count("database is locked"),
        "seconds": round(seconds, 1),
        "runs per worker": dict(workers),
    }


def measure(database: str, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    postgres = Postgres() if database == "PostgreSQL" else None
    if postgres is not None:
        postgres.start()
    try:
        home = folder / f"prefect-{database}"
        url = postgres.url if postgres is not None else None
        with PrefectServer(home, port=free_port(), database_url=url) as prefect:
            results = {"url": str(folder / f"results-{database}")}
            set_up_folder = folder / f"set-up-{database}"
            set_up_folder.mkdir()
            with running(prefect, set_up_folder, results) as set_up:
                return burst(set_up, args.jobs, args.clients, args.deployed)
    finally:
        if postgres is not None:
            postgres.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--deployed", type=int, default=20)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows = {}
    with tempfile.TemporaryDirectory(prefix="scale-out-bench-") as tmp:
        for database in ("SQLite", "PostgreSQL"):
            rows[database] = measure(database, args, Path(tmp))
    print(
        f"{args.jobs} async jobs ({args.deployed} on the workers) from {args.clients} clients, "
        "alternating between two pygeoapi instances"
    )
    keys = list(rows["SQLite"])
    print("| | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for database, row in rows.items():
        print(f"| {database} | " + " | ".join(str(row[key]) for key in keys) + " |")


if __name__ == "__main__":
    main()
