"""What a job's Prefect UI extras and log cost: the writes, one at a time.

    .venv/bin/python benchmarks/ui_writes.py [--jobs 100] [--lines 10]

Starts a Prefect server (own PREFECT_HOME, free loopback port), creates
``--jobs`` flow runs as a sync job's record would (one create, directly
Completed), and times, per job, each write this package adds: the rename to
``<process>-<id8>`` (``PATCH /flow_runs/{id}``), the summary artifact
(``POST /artifacts/``) and one batch of ``--lines`` log lines
(``POST /logs/``), next to the create itself. Prints medians and p95 in ms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from pygeoapi_prefect.execution.run_page import job_summary, run_name  # noqa: E402
from pygeoapi_prefect.prefect.api import PrefectAPI  # noqa: E402
from pygeoapi_prefect.prefect.server import PrefectServer, free_port  # noqa: E402
from pygeoapi_prefect.prefect.states import state  # noqa: E402


def _timed(samples: list[float], call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    started = time.perf_counter()
    result = call(*args, **kwargs)
    samples.append((time.perf_counter() - started) * 1000)
    return result


def _row(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[max(0, int(len(ordered) * 0.95) - 1)]
    return f"| {name} | {statistics.median(ordered):.1f} | {p95:.1f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--lines", type=int, default=10)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pygeoapi-prefect-ui-bench-"))
    server = PrefectServer(work / "prefect-home", port=free_port())
    server.start(timeout=180)
    api = PrefectAPI(server.api_url, timeout=30)
    creates: list[float] = []
    renames: list[float] = []
    artifacts: list[float] = []
    logs: list[float] = []
    try:
        for number in range(args.jobs):
            run = _timed(
                creates,
                api.create_flow_run,
                flow_name="bench-ui",
                state=state("COMPLETED", "Job complete"),
                tags=["pygeoapi", "pygeoapi.process:bench-ui"],
                parameters={"inputs": {"n": number}},
            )
            job_id = str(run["id"])
            _timed(renames, api.rename_flow_run, job_id, run_name("bench-ui", job_id))
            markdown = job_summary(
                job_id=job_id,
                process_id="bench-ui",
                status="successful",
                message="Job complete",
                progress=100,
                inputs={"n": number},
                jobs_url="http://127.0.0.1:5000/jobs",
            )
            artifact = {"type": "markdown", "data": markdown, "flow_run_id": job_id}
            _timed(artifacts, api.create_artifact, artifact)
            now = datetime.now(UTC).isoformat()
            batch = [
                {
                    "name": "bench",
                    "level": 20,
                    "message": f"line {line} of job {number}",
                    "timestamp": now,
                    "flow_run_id": job_id,
                }
                for line in range(args.lines)
            ]
            _timed(logs, api.create_logs, batch)
    finally:
        api.close()
        server.stop()
    print(f"{args.jobs} jobs, Prefect on SQLite; ms per call")
    print("| write | median | p95 |")
    print("|---|---|---|")
    print(_row("create the run, Completed (the job's own record)", creates))
    print(_row("rename `<process>-<id8>` (PATCH /flow_runs/{id})", renames))
    print(_row("summary artifact (POST /artifacts/)", artifacts))
    print(_row(f"{args.lines} log lines (POST /logs/)", logs))


if __name__ == "__main__":
    main()
