"""Deployment latency: jobs run by Prefect process workers, plain and warm, against TinyDB.

    .venv/bin/python benchmarks/deployments.py [--runs 5]

Starts a Prefect server and two process work pools: one with a plain
`prefect worker` (PREFECT_WORKER_QUERY_SECONDS=1), one with
`pygeoapi-prefect warm-worker`; deploys hello-world to each, and serves
pygeoapi on the same WSGI server with hello-world on each deployment, and
with pygeoapi's TinyDB manager (the baseline, run locally).
Prints medians: submit-to-start and submit-to-done of deployment jobs, and
the sync request time of each set-up.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from core import ROOT, execute, start_pygeoapi  # noqa: E402

from pygeoapi_prefect.prefect.api import PrefectAPI  # noqa: E402
from pygeoapi_prefect.prefect.server import PrefectServer, free_port  # noqa: E402


def seconds(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def measure(api: PrefectAPI, url: str, runs: int) -> tuple[list[float], list[float], list[float]]:
    """Submit-to-start, submit-to-done of async jobs, and sync request times, in seconds."""
    starts, dones, syncs = [], [], []
    with httpx.Client(base_url=url, timeout=120) as client:
        execute(client)  # warm-up: the worker's first run
        for _ in range(runs):
            job_id = execute(client, True).headers["Location"].rsplit("/", 1)[-1]
            while client.get(f"/jobs/{job_id}", params={"f": "json"}).json()["status"] in (
                "accepted",
                "running",
            ):
                time.sleep(0.2)
            run = api.read_flow_run(job_id)
            assert run is not None
            created = seconds(run["created"])
            starts.append(seconds(run["start_time"]) - created)
            dones.append(seconds(run["end_time"]) - created)
            started = time.perf_counter()
            execute(client)
            syncs.append(time.perf_counter() - started)
    return starts, dones, syncs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pygeoapi-prefect-bench-deploy-"))
    prefect = PrefectServer(work / "prefect-home", port=free_port())
    print(f"starting a Prefect server in {work} ...", file=sys.stderr)
    prefect.start(timeout=120)
    env = dict(os.environ) | {
        "PREFECT_API_URL": prefect.api_url,
        "PREFECT_HOME": str(work / "home"),
    }
    api = PrefectAPI(prefect.api_url, timeout=30)
    api.request("POST", "/work_pools/", json={"name": "bench", "type": "process"})
    api.request("POST", "/work_pools/", json={"name": "bench-warm", "type": "process"})
    warm_worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pygeoapi_prefect.cli",
            "warm-worker",
            "--pool",
            "bench-warm",
            "--socket",
            str(work / "warm.sock"),
        ],
        env=env,
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    worker_env = env | {"PREFECT_WORKER_QUERY_SECONDS": "1"}
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prefect",
            "worker",
            "start",
            "--pool",
            "bench",
            "--type",
            "process",
        ],
        env=worker_env,
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    processes = []
    try:
        config = yaml.safe_load((ROOT / "example-config.yml").read_text())
        config["server"]["manager"]["results"] = {"url": str(work / "results")}
        config_path = work / "deploy-config.yml"
        config_path.write_text(yaml.safe_dump(config))
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pygeoapi_prefect.cli",
                "deploy-process-as-flow",
                "hello-world",
                "--config",
                str(config_path),
                "--deployment-name",
                "bench",
                "--work-pool",
                "bench",
            ],
            env=env,
            cwd=work,
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pygeoapi_prefect.cli",
                "deploy-process-as-flow",
                "hello-world",
                "--config",
                str(config_path),
                "--deployment-name",
                "warm",
                "--work-pool",
                "bench-warm",
                "--warm",
            ],
            env=env,
            cwd=work,
            check=True,
            capture_output=True,
        )
        tiny = work / "tinydb"
        tiny.mkdir()
        tiny_proc, tiny_url = start_pygeoapi(
            tiny,
            {"name": "TinyDB", "connection": str(tiny / "jobs.db"), "output_dir": str(tiny)},
            "pygeoapi.flask_app",
            env,
        )
        processes.append(tiny_proc)

        measured = {}
        for worker_kind, deployment in (
            ("process worker", "hello-world/bench"),
            ("warm worker", "hello-world/warm"),
        ):
            folder = work / deployment.replace("/", "-")
            folder.mkdir()
            prefect_proc, prefect_url = start_pygeoapi(
                folder,
                {
                    "name": "pygeoapi_prefect.manager.PrefectManager",
                    "results": {"url": str(work / "results")},
                },
                "pygeoapi_prefect.flask_app",
                env,
                processors={"hello-world": {"name": "HelloWorld", "deployment": deployment}},
            )
            processes.append(prefect_proc)
            measured[worker_kind] = measure(api, prefect_url, args.runs)
        with httpx.Client(base_url=tiny_url, timeout=120) as client:
            tiny_syncs = []
            for _ in range(args.runs):
                started = time.perf_counter()
                execute(client)
                tiny_syncs.append(time.perf_counter() - started)
    finally:
        for process in processes:
            process.terminate()
            process.wait(10)
        for running in (worker, warm_worker):
            os.killpg(running.pid, 15)
            running.wait(30)
        prefect.stop()

    tiny_sync = statistics.median(tiny_syncs)
    print("\n| measure | worker | PrefectManager (s) | TinyDB sync (s) | ratio |")
    print("|---|---|--:|--:|--:|")
    for worker_kind, (starts, dones, syncs) in measured.items():
        rows = {
            "deployment job, submit to start": statistics.median(starts),
            "deployment job, submit to done": statistics.median(dones),
            "sync request through the deployment": statistics.median(syncs),
        }
        for name, value in rows.items():
            ratio = value / tiny_sync
            print(f"| {name} | {worker_kind} | {value:.2f} | {tiny_sync:.3f} | {ratio:.0f}x |")


if __name__ == "__main__":
    main()
