"""Core benchmark: PrefectManager against pygeoapi's TinyDB manager, same run.

    .venv/bin/python benchmarks/core.py [--repeat 30] [--small 100] [--large 10000]
                                        [--burst 200] [--clients 20] [--memory-jobs 2000]
                                        [--server werkzeug|gunicorn] [--workers 4]

Starts one Prefect server (own PREFECT_HOME, free loopback port) and, one
after the other, two pygeoapi servers on the same WSGI server (werkzeug,
threaded; or gunicorn with --workers gthread workers): one with pygeoapi's
TinyDBManager (``pygeoapi.flask_app:APP``), one with PrefectManager
(``pygeoapi_prefect.flask_app:APP``). Each goes through the same phases (see
benchmarks/README.md); the script prints a table of medians, the ratio
PrefectManager / TinyDB for each row, and the target of issue 5 where there
is one.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "src"))

from pygeoapi_prefect.prefect.api import PrefectAPI  # noqa: E402
from pygeoapi_prefect.prefect.server import UNUSED_SERVICES, PrefectServer, free_port  # noqa: E402

SERVE = """
import sys
from werkzeug.serving import make_server
module = __import__(sys.argv[1], fromlist=["APP"])
make_server("127.0.0.1", int(sys.argv[2]), module.APP, threaded=True).serve_forever()
"""
MIB = 1024 * 1024
RECORDER = "recorder"


def write_config(folder: Path, port: int, manager: dict, processors: dict | None = None) -> Path:
    config = yaml.safe_load((ROOT / "example-config.yml").read_text())
    for process_id, processor in (processors or {}).items():
        config["resources"][process_id]["processor"] = processor
    # hello-world that notes each run (benchmarks/recording.py), for the burst.
    recorder = json.loads(json.dumps(config["resources"]["hello-world"]))
    recorder["processor"] = {"name": "recording.RecordingHelloWorld"}
    config["resources"][RECORDER] = recorder
    config["server"]["bind"] = {"host": "127.0.0.1", "port": port}
    config["server"]["url"] = f"http://127.0.0.1:{port}"
    config["server"]["pretty_print"] = False
    config["server"]["manager"] = manager
    config["logging"] = {"level": "ERROR"}
    path = folder / "config.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def serve_command(app_module: str, port: int, server: str, workers: int) -> list[str]:
    """The command serving ``<app_module>:APP`` on loopback ``port``."""
    if server == "werkzeug":
        return [sys.executable, "-c", SERVE, app_module, str(port)]
    # What `pygeoapi-prefect serve` runs, for either app.
    return [
        *(sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}"),
        *("--workers", str(workers), "--worker-class", "gthread", "--threads", "8"),
        *("--timeout", "120", "--graceful-timeout", "10", "--no-control-socket"),
        f"{app_module}:APP",
    ]


def start_pygeoapi(
    folder: Path,
    manager: dict,
    app_module: str,
    env: dict,
    processors: dict | None = None,
    *,
    server: str = "werkzeug",
    workers: int = 1,
) -> tuple[subprocess.Popen, str]:
    from pygeoapi_prefect.cli.main import write_openapi

    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    port = free_port()
    config = write_config(folder, port, manager, processors)
    openapi = folder / "openapi.yml"
    write_openapi(config, openapi)
    python_path = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH")) if p)
    env = env | {
        "PYGEOAPI_CONFIG": str(config),
        "PYGEOAPI_OPENAPI": str(openapi),
        "PYTHONPATH": python_path,
        "BENCH_RAN_FILE": str(folder / "ran.txt"),
    }
    process = subprocess.Popen(
        serve_command(app_module, port, server, workers),
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


def rss_mib(pid: int) -> float:
    """Resident set size of a process, in MiB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / MIB
    raise RuntimeError(f"no VmRSS for process {pid}")


def _tree_rss_mib(pid: int, skip: Callable[[int], bool]) -> float:
    # RSS of ``pid`` and its descendants, leaving out (with theirs) those ``skip`` names.
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            if skip(current):
                continue
            total += rss_mib(current)
        except (OSError, RuntimeError):
            continue
        todo.extend(children.get(current, []))
    return total


def rss_tree_mib(pid: int) -> float:
    """RSS of a process and all its descendants (PrefectManager's worker processes)."""
    return _tree_rss_mib(pid, lambda _: False)


def _is_multiprocessing(pid: int) -> bool:
    return b"multiprocessing" in Path(f"/proc/{pid}/cmdline").read_bytes()


def server_rss_mib(pid: int) -> float:
    """RSS of the web server: ``pid`` and its descendants but the job processes.

    ``pid`` alone under werkzeug; gunicorn's master and its workers under
    gunicorn. Left out: multiprocessing's processes (PrefectManager's local
    job workers and their resource tracker), counted by ``rss_tree_mib``.
    """
    return _tree_rss_mib(pid, _is_multiprocessing)


def median_ms(call: Callable[[], Any], repeat: int) -> float:
    for _ in range(3):
        call()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


def execute(
    client: httpx.Client,
    asynchronous: bool = False,
    process: str = "hello-world",
    name: str = "bench",
) -> httpx.Response:
    headers = {"Prefer": "respond-async"} if asynchronous else {}
    response = client.post(
        f"/processes/{process}/execution", json={"inputs": {"name": name}}, headers=headers
    )
    response.raise_for_status()
    return response


def job_id_of(response: httpx.Response) -> str:
    return response.headers["Location"].rsplit("/", 1)[-1]


def _timestamp(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


@dataclass
class Burst:
    seconds: float
    lost: int
    twice: int
    failed: int
    refused: int


def burst(url: str, ran_file: Path, count: int, clients: int) -> Burst:
    """Submit ``count`` async jobs from ``clients`` threads; check each ran once.

    Each job gets its own ``name`` input, which the process notes in
    ``ran_file`` when it runs. The figure is the time from the first submit
    to the latest ``finished`` time the jobs report, so the observer's
    polling (after the runs were noted) neither loads the server during the
    burst nor rounds the figure.
    """
    ran_file.unlink(missing_ok=True)
    names = [f"burst-{uuid.uuid4().hex[:12]}" for _ in range(count)]
    started = time.time()

    refused: list[str] = []

    def submit(chunk: list[str]) -> list[tuple[str, str]]:
        accepted = []
        with httpx.Client(base_url=url, timeout=120) as client:
            for name in chunk:
                try:
                    accepted.append((name, job_id_of(execute(client, True, RECORDER, name=name))))
                except httpx.HTTPStatusError as exc:  # e.g. 503: Prefect did not answer in time
                    log(f"  submit {name}: {exc.response.status_code} {exc.response.text[:200]}")
                    refused.append(name)
        return accepted

    chunks = [names[i::clients] for i in range(clients)]
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        submitted = [pair for chunk in pool.map(submit, chunks) for pair in chunk]
    count -= len(refused)
    names = [name for name in names if name not in set(refused)]
    deadline = time.time() + 300
    while time.time() < deadline:
        noted = ran_file.read_text().splitlines() if ran_file.exists() else []
        if len(noted) >= count:
            break
        time.sleep(0.25)
    finished: dict[str, float] = {}
    failed = 0
    with httpx.Client(base_url=url, timeout=60) as client:
        pending = {job_id for _, job_id in submitted}
        while pending and time.time() < deadline:
            for job_id in list(pending):
                job = client.get(f"/jobs/{job_id}", params={"f": "json"}).json()
                if job.get("status") in ("successful", "failed", "dismissed"):
                    pending.discard(job_id)
                    finished[job_id] = _timestamp(job["finished"])
                    failed += job["status"] != "successful"
            if pending:
                time.sleep(0.5)
    runs = Counter(ran_file.read_text().splitlines() if ran_file.exists() else [])
    distinct_ids = len({job_id for _, job_id in submitted})
    lost = sum(1 for name in names if runs[name] == 0) + (count - distinct_ids)
    twice = sum(1 for name in names if runs[name] > 1)
    lost += count - len(finished) if len(finished) < count else 0
    seconds = (max(finished.values()) - started) if finished else float("nan")
    return Burst(seconds, lost, twice, failed, len(refused))


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


def fill_prefect(api_url: str, count: int, threads: int = 4) -> None:
    """Create ``count`` finished job runs through the REST API, a few at once."""
    api = PrefectAPI(api_url, timeout=60, write_concurrency=threads)

    def create(_: int) -> None:
        api.create_flow_run(
            flow_name="hello-world",
            state={"type": "COMPLETED", "name": "Completed", "message": "Job complete"},
            tags=["pygeoapi", "pygeoapi.process:hello-world"],
            labels={
                "pygeoapi.progress": 100,
                "pygeoapi.mimetype": "application/json",
                "pygeoapi.response": "raw",
            },
        )

    try:
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            list(pool.map(create, range(count)))
    finally:
        api.close()


def create_floor_ms(api_url: str, repeat: int) -> float:
    """Median of one job run creation, straight through the REST API."""
    api = PrefectAPI(api_url, timeout=60)
    try:
        return median_ms(
            lambda: api.create_flow_run(
                flow_name="floor",
                state={"type": "COMPLETED", "name": "Completed"},
                tags=["floor"],
            ),
            repeat,
        )
    finally:
        api.close()


@dataclass
class Phase:
    """What one manager measures; ``stored`` counts the jobs its store holds."""

    url: str
    pid: int
    fill: Callable[[int], None]
    args: argparse.Namespace
    stored: int = 0
    errors: int = 0
    rows: dict[str, float] = field(default_factory=dict)

    def fill_to(self, total: int) -> None:
        if total > self.stored:
            started = time.monotonic()
            self.fill(total - self.stored)
            log(f"  stored {total - self.stored} jobs in {time.monotonic() - started:.0f} s")
            self.stored = total

    def sync(self, client: httpx.Client) -> None:
        execute(client)
        self.stored += 1

    def queries(self, client: httpx.Client, label: str, job_id: str) -> None:
        repeat = self.args.repeat

        def jobs() -> None:
            client.get("/jobs", params={"limit": 10, "f": "json"}).raise_for_status()

        def job() -> None:
            client.get(f"/jobs/{job_id}", params={"f": "json"}).raise_for_status()

        self.rows[f"GET /jobs?limit=10, {label} jobs (ms)"] = median_ms(jobs, repeat)
        self.rows[f"GET /jobs/{{id}}, {label} jobs (ms)"] = median_ms(job, repeat)

    def warm_up(self, client: httpx.Client) -> None:
        self.sync(client)
        client.get("/jobs", params={"limit": 10, "f": "json"}).raise_for_status()
        warm = job_id_of(execute(client, True, RECORDER, name="warm-up"))
        self.stored += 1
        while client.get(f"/jobs/{warm}", params={"f": "json"}).json()["status"] in (
            "accepted",
            "running",
        ):
            time.sleep(0.2)

    def run(self) -> dict[str, float]:
        args = self.args
        small, large = args.small, args.large
        rows = self.rows
        # Warm up every path once (imports, connection pools, worker pool); with
        # several gunicorn workers, on new connections, which any worker may take.
        for _ in range(args.warm_rounds):
            with httpx.Client(base_url=self.url, timeout=120) as client:
                self.warm_up(client)
        with httpx.Client(base_url=self.url, timeout=120) as client:
            job_id = job_id_of(execute(client))
            self.stored += 1
            time.sleep(1)
            rows["RSS after start (MiB)"] = server_rss_mib(self.pid)
            rows["sync execute, 0 jobs (ms)"] = median_ms(lambda: self.sync(client), args.repeat)
            self.fill_to(small)
            self.queries(client, f"{small}", job_id)
            log(f"  burst of {args.burst} async jobs from {args.clients} clients ...")
            result = burst(self.url, Path(args.ran_file), args.burst, args.clients)
            self.stored += args.burst
            rows[f"burst of {args.burst} async, all done (s)"] = result.seconds
            rows[f"burst of {args.burst}: lost / run twice / failed"] = float(
                result.lost * 10_000 + result.twice * 100 + result.failed
            )
            rows[f"burst of {args.burst}: refused (an error answer)"] = float(result.refused)
            log(f"  {args.memory_jobs} sync jobs for the memory figures ...")
            half = args.memory_jobs // 2

            def many(count: int) -> None:
                def one(_: int) -> None:
                    with httpx.Client(base_url=self.url, timeout=120) as own:
                        for _ in range(count // 4):
                            try:
                                execute(own)
                            except httpx.HTTPStatusError as exc:
                                log(f"  sync job: {exc.response.status_code}")
                                self.errors += 1

                with concurrent.futures.ThreadPoolExecutor(4) as pool:
                    list(pool.map(one, range(4)))
                self.stored += count // 4 * 4

            self.errors = 0
            many(half)
            middle = server_rss_mib(self.pid)
            many(args.memory_jobs - half)
            rows[f"RSS after {args.memory_jobs} more jobs (MiB)"] = server_rss_mib(self.pid)
            rows["RSS with child processes, at the end (MiB)"] = rss_tree_mib(self.pid)
            rows[f"{args.memory_jobs} sync jobs: error answers"] = float(self.errors)
            rows[f"RSS growth over the last {args.memory_jobs - half} jobs (MiB)"] = (
                server_rss_mib(self.pid) - middle
            )
            self.fill_to(large)
            self.queries(client, f"{large}", job_id)
            rows[f"sync execute, {large} jobs (ms)"] = median_ms(
                lambda: self.sync(client), args.repeat
            )
        return rows


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _targets(args: argparse.Namespace) -> dict[str, Callable[[float, float], tuple[str, bool]]]:
    # Issue 5's targets, each as (text, met) from (TinyDB value, Prefect value).
    small, large = args.small, args.large

    def ratio(limit: float) -> Callable[[float, float], tuple[str, bool]]:
        return lambda t, p: (f"<= {limit:g}x", p <= limit * t)

    def absolute(limit: float) -> Callable[[float, float], tuple[str, bool]]:
        return lambda t, p: (f"<= {limit:g}", p <= limit)

    return {
        "sync execute, 0 jobs (ms)": ratio(1.5),
        f"sync execute, {large} jobs (ms)": ratio(0.5),
        f"GET /jobs?limit=10, {large} jobs (ms)": absolute(50),
        f"GET /jobs/{{id}}, {large} jobs (ms)": absolute(50),
        f"GET /jobs?limit=10 growth {small} -> {large}": absolute(1.5),
        f"GET /jobs/{{id}} growth {small} -> {large}": absolute(1.5),
        f"burst of {args.burst} async, all done (s)": absolute(20),
        f"burst of {args.burst}: lost / run twice / failed": lambda t, p: ("0 / 0 / 0", p == 0),
        f"burst of {args.burst}: refused (an error answer)": absolute(0),
        f"RSS after {args.memory_jobs} more jobs (MiB)": lambda t, p: (
            "<= TinyDB + 60",
            p <= t + 60,
        ),
        f"RSS growth over the last {args.memory_jobs - args.memory_jobs // 2} jobs (MiB)": (
            lambda t, p: ("~0 (< 5)", p < 5)
        ),
    }


def print_table(rows: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    small, large = args.small, args.large
    for values in rows.values():
        for what in ("GET /jobs?limit=10", "GET /jobs/{id}"):
            values[f"{what} growth {small} -> {large}"] = (
                values[f"{what}, {large} jobs (ms)"] / values[f"{what}, {small} jobs (ms)"]
            )
    targets = _targets(args)
    width = max(len(row) for row in rows["tinydb"])
    print(f"\n| {'measure':<{width}} | TinyDB | Prefect | ratio | target | met |")
    print(f"|{'-' * (width + 2)}|-------:|--------:|------:|--------|-----|")
    for row, tinydb_value in rows["tinydb"].items():
        prefect_value = rows["prefect"][row]
        if "lost" in row:
            shown = [
                f"{int(v) // 10_000}/{int(v) // 100 % 100}/{int(v) % 100}"
                for v in (tinydb_value, prefect_value)
            ]
            ratio = "-"
        else:
            shown = [f"{tinydb_value:.1f}", f"{prefect_value:.1f}"]
            ratio = f"{prefect_value / tinydb_value:.2f}x" if tinydb_value else "-"
        target, met = targets[row](tinydb_value, prefect_value) if row in targets else ("", None)
        mark = "" if met is None else ("yes" if met else "NO")
        print(
            f"| {row:<{width}} | {shown[0]:>6} | {shown[1]:>7} | {ratio:>5} | {target} | {mark} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30, help="requests per median")
    parser.add_argument("--small", type=int, default=100, help="stored jobs, small store")
    parser.add_argument("--large", type=int, default=10_000, help="stored jobs, large store")
    parser.add_argument("--burst", type=int, default=200, help="async jobs in the burst")
    parser.add_argument("--clients", type=int, default=20, help="client threads of the burst")
    parser.add_argument(
        "--memory-jobs", type=int, default=2000, help="sync jobs between the RSS samples"
    )
    parser.add_argument(
        "--only", choices=("tinydb", "prefect"), help="measure one manager (for profiling)"
    )
    parser.add_argument(
        "--manager-option",
        action="append",
        default=[],
        metavar="KEY=YAML",
        help="extra server.manager key for PrefectManager (e.g. local.max_workers=4)",
    )
    parser.add_argument(
        "--lean-prefect",
        action="store_true",
        help="start the Prefect server without the services jobs do not need",
    )
    parser.add_argument(
        "--server",
        choices=("werkzeug", "gunicorn"),
        default="werkzeug",
        help="WSGI server of both pygeoapi servers (gunicorn: gthread, 8 threads a worker)",
    )
    parser.add_argument(
        "--workers", type=int, default=4, help="gunicorn worker processes (with --server gunicorn)"
    )
    args = parser.parse_args()
    args.warm_rounds = 1 if args.server == "werkzeug" else 3 * args.workers

    work = Path(tempfile.mkdtemp(prefix="pygeoapi-prefect-bench-"))
    prefect = PrefectServer(
        work / "prefect-home",
        port=free_port(),
        disabled_services=UNUSED_SERVICES if args.lean_prefect else (),
    )
    log(f"starting a Prefect server in {work} ...")
    prefect.start(timeout=120)
    env = dict(os.environ) | {
        "PREFECT_API_URL": prefect.api_url,
        "PREFECT_HOME": str(work / "home"),
    }
    prefect_manager: dict[str, Any] = {
        "name": "pygeoapi_prefect.manager.PrefectManager",
        "results": {"url": str(work / "prefect-results")},
    }
    for option in args.manager_option:
        key, _, value = option.partition("=")
        *parents, leaf = key.split(".")
        target = prefect_manager
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = yaml.safe_load(value)
    managers = {
        "tinydb": (
            {
                "name": "TinyDB",
                "connection": str(work / "tinydb" / "jobs.db"),
                "output_dir": str(work / "tinydb"),
            },
            "pygeoapi.flask_app",
            lambda count: fill_tinydb(work / "tinydb" / "jobs.db", count),
        ),
        "prefect": (
            prefect_manager,
            "pygeoapi_prefect.flask_app",
            lambda count: fill_prefect(prefect.api_url, count),
        ),
    }
    rows: dict[str, dict[str, float]] = {}
    started = time.monotonic()
    floor = create_floor_ms(prefect.api_url, args.repeat)
    try:
        for name, (manager, module, fill) in managers.items():
            if args.only and name != args.only:
                continue
            folder = work / name
            folder.mkdir(exist_ok=True)
            log(f"{name}: starting pygeoapi ...")
            workers = args.workers if args.server == "gunicorn" else 1
            process, url = start_pygeoapi(
                folder, manager, module, env, server=args.server, workers=workers
            )
            try:
                args.ran_file = str(folder / "ran.txt")
                rows[name] = Phase(url, process.pid, fill, args).run()
            finally:
                process.terminate()
                process.wait(30)
            log(f"{name}: done after {time.monotonic() - started:.0f} s")
    finally:
        prefect.stop()
    if len(rows) == 2:
        print_table(rows, args)
    else:
        for name, values in rows.items():
            for row, value in values.items():
                print(f"{name}: {row}: {value:.1f}")
    print(
        f"\nPrefect's POST /flow_runs/ alone (empty server, this client): {floor:.1f} ms median"
        " - the floor of a PrefectManager sync execute"
    )
    where = "werkzeug" if args.server == "werkzeug" else f"gunicorn, {args.workers} workers"
    log(f"whole run ({where}): {time.monotonic() - started:.0f} s; work folder {work}")


if __name__ == "__main__":
    main()
