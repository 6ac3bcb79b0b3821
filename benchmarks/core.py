"""Core benchmark: PrefectManager against pygeoapi's TinyDB manager, same run.

    .venv/bin/python benchmarks/core.py [--sync 50] [--existing 1000]

Starts one Prefect server (own PREFECT_HOME, free loopback port) and two
pygeoapi servers on the same WSGI server (werkzeug, threaded): one with
pygeoapi's TinyDBManager, one with PrefectManager. Prints a table of medians
and the ratio PrefectManager / TinyDB for each row.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from pygeoapi_prefect.prefect_api import PrefectAPI  # noqa: E402
from pygeoapi_prefect.server import PrefectServer, free_port  # noqa: E402

SERVE = """
import sys
from werkzeug.serving import make_server
module = __import__(sys.argv[1], fromlist=["APP"])
make_server("127.0.0.1", int(sys.argv[2]), module.APP, threaded=True).serve_forever()
"""


def write_config(folder: Path, port: int, manager: dict, processors: dict | None = None) -> Path:
    config = yaml.safe_load((ROOT / "example-config.yml").read_text())
    for process_id, processor in (processors or {}).items():
        config["resources"][process_id]["processor"] = processor
    config["server"]["bind"] = {"host": "127.0.0.1", "port": port}
    config["server"]["url"] = f"http://127.0.0.1:{port}"
    config["server"]["pretty_print"] = False
    config["server"]["manager"] = manager
    config["logging"] = {"level": "ERROR"}
    path = folder / "config.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def start_pygeoapi(
    folder: Path, manager: dict, app_module: str, env: dict, processors: dict | None = None
) -> tuple[subprocess.Popen, str]:
    from pygeoapi_prefect.cli import write_openapi

    port = free_port()
    config = write_config(folder, port, manager, processors)
    openapi = folder / "openapi.yml"
    write_openapi(config, openapi)
    env = env | {"PYGEOAPI_CONFIG": str(config), "PYGEOAPI_OPENAPI": str(openapi)}
    process = subprocess.Popen(
        [sys.executable, "-c", SERVE, app_module, str(port)],
        env=env,
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=(folder / "server.log").open("wb"),
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/processes", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"pygeoapi did not start; see {folder / 'server.log'}")


def median_ms(call, repeat: int) -> float:
    for _ in range(3):
        call()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


def execute(client: httpx.Client, asynchronous: bool = False) -> httpx.Response:
    headers = {"Prefer": "respond-async"} if asynchronous else {}
    response = client.post(
        "/processes/hello-world/execution", json={"inputs": {"name": "bench"}}, headers=headers
    )
    response.raise_for_status()
    return response


def _timestamp(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def burst(url: str, count: int = 20) -> float:
    """Seconds from submitting ``count`` async jobs at once to the last one finished.

    The end is the latest ``finished`` time the jobs report, so the observer's
    polling (slow, every 0.5 s) neither loads the server nor rounds the figure.
    """
    started = time.time()
    with concurrent.futures.ThreadPoolExecutor(count) as pool:

        def submit(_: int) -> str:
            with httpx.Client(base_url=url, timeout=60) as client:
                return execute(client, asynchronous=True).headers["Location"].rsplit("/", 1)[-1]

        job_ids = list(pool.map(submit, range(count)))
    finished: dict[str, float] = {}
    with httpx.Client(base_url=url, timeout=60) as client:
        while len(finished) < count and time.time() - started < 300:
            time.sleep(0.5)
            for job_id in set(job_ids) - set(finished):
                job = client.get(f"/jobs/{job_id}", params={"f": "json"}).json()
                if job["status"] in ("successful", "failed"):
                    finished[job_id] = _timestamp(job["finished"])
    if len(finished) < count:
        raise RuntimeError(f"{count - len(finished)} jobs of the burst never finished")
    return max(finished.values()) - started


def fill_tinydb(path: Path, count: int) -> None:
    import tinydb

    now = "2026-01-01T00:00:00.000000Z"
    with tinydb.TinyDB(path) as db:
        db.insert_multiple(
            {
                "type": "process",
                "identifier": str(uuid.uuid1()),
                "process_id": "hello-world",
                "created": now,
                "started": now,
                "updated": now,
                "finished": now,
                "status": "successful",
                "location": None,
                "mimetype": "application/json",
                "message": "Job complete",
                "progress": 100,
            }
            for _ in range(count)
        )


def fill_prefect(api: PrefectAPI, count: int) -> None:
    def create(_: int) -> None:
        api.create_flow_run(
            flow_name="hello-world",
            state={"type": "COMPLETED", "name": "Completed"},
            tags=["pygeoapi", "pygeoapi.process:hello-world"],
            labels={"pygeoapi.progress": 100, "pygeoapi.mimetype": "application/json"},
        )

    # One writer: a Prefect server on SQLite locks up under parallel writes.
    for n in range(count):
        create(n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sync", type=int, default=50, help="requests per median")
    parser.add_argument(
        "--existing", type=int, default=1000, help="jobs stored for the 'at N' rows"
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="pygeoapi-prefect-bench-"))
    prefect = PrefectServer(work / "prefect-home", port=free_port())
    print(f"starting a Prefect server in {work} ...", file=sys.stderr)
    prefect.start(timeout=120)
    env = dict(os.environ) | {
        "PREFECT_API_URL": prefect.api_url,
        "PREFECT_HOME": str(work / "home"),
    }
    api = PrefectAPI(prefect.api_url, timeout=30)
    managers = {
        "tinydb": (
            {
                "name": "TinyDB",
                "connection": str(work / "tinydb" / "jobs.db"),
                "output_dir": str(work / "tinydb"),
            },
            "pygeoapi.flask_app",
        ),
        "prefect": (
            {
                "name": "pygeoapi_prefect.manager.PrefectManager",
                "results": {"url": str(work / "prefect-results")},
            },
            "pygeoapi_prefect.flask_app",
        ),
    }
    rows: dict[str, dict[str, float]] = {}
    processes = []
    try:
        for name, (manager, module) in managers.items():
            folder = work / name
            folder.mkdir(exist_ok=True)
            process, url = start_pygeoapi(folder, manager, module, env)
            processes.append(process)
            with httpx.Client(base_url=url, timeout=60) as client:
                results = rows.setdefault(name, {})

                def jobs(client: httpx.Client = client) -> None:
                    client.get("/jobs", params={"limit": 10, "f": "json"}).raise_for_status()

                results["GET /jobs?limit=10, 0 jobs (ms)"] = median_ms(jobs, args.sync)
                results["sync execute, few jobs (ms)"] = median_ms(
                    lambda: execute(client), args.sync
                )
                results["async submit (ms)"] = median_ms(lambda: execute(client, True), args.sync)
                # Let the submitted jobs drain before the burst is timed.
                last = execute(client, True).headers["Location"].rsplit("/", 1)[-1]
                while client.get(f"/jobs/{last}", params={"f": "json"}).json()["status"] in (
                    "accepted",
                    "running",
                ):
                    time.sleep(0.2)
                time.sleep(1)
                results["burst of 20 async, all done (s)"] = burst(url)
                print(f"{name}: storing {args.existing} more jobs ...", file=sys.stderr)
                if name == "tinydb":
                    fill_tinydb(work / "tinydb" / "jobs.db", args.existing)
                else:
                    fill_prefect(api, args.existing)
                results[f"GET /jobs?limit=10, {args.existing}+ jobs (ms)"] = median_ms(
                    jobs, args.sync
                )
                results[f"sync execute, {args.existing}+ jobs (ms)"] = median_ms(
                    lambda: execute(client), args.sync
                )
    finally:
        for process in processes:
            process.terminate()
            process.wait(10)
        prefect.stop()

    width = max(len(row) for row in rows["tinydb"])
    print(f"\n| {'measure':<{width}} | TinyDB | Prefect | ratio |")
    print(f"|{'-' * (width + 2)}|-------:|--------:|------:|")
    for row, tinydb_value in rows["tinydb"].items():
        prefect_value = rows["prefect"][row]
        ratio = prefect_value / tinydb_value
        print(f"| {row:<{width}} | {tinydb_value:6.1f} | {prefect_value:7.1f} | {ratio:4.2f}x |")


if __name__ == "__main__":
    main()
