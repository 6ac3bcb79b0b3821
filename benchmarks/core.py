"""Core benchmark: PrefectManager against pygeoapi's TinyDB and PostgreSQL managers, same run.

    .venv/bin/python benchmarks/core.py [--repeat 30] [--small 1000] [--large 10000]
                                        [--burst 200] [--clients 20] [--memory-jobs 2000]
                                        [--server werkzeug|gunicorn] [--workers 4]
                                        [--prefect-db sqlite|postgresql]

Starts one Prefect server (own PREFECT_HOME, free loopback port), one
PostgreSQL server (Debian's binaries, as tests/postgres.py starts them) and,
one after the other, three pygeoapi servers on the same WSGI server
(werkzeug, threaded; or gunicorn with --workers gthread workers): pygeoapi's
TinyDBManager and PostgreSQLManager (``pygeoapi.flask_app:APP``), and
PrefectManager (``pygeoapi_prefect.flask_app:APP``). Each goes through the
same phases (see benchmarks/README.md); the script prints a table of
medians, the ratios PrefectManager / TinyDB and PrefectManager /
PostgreSQL for each row, and the target of issue 15 where there is one.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from postgres import Postgres  # noqa: E402 - tests/postgres.py: Debian's PostgreSQL

from pygeoapi_prefect.execution import seed as seeds  # noqa: E402
from pygeoapi_prefect.prefect.api import PrefectAPI  # noqa: E402
from pygeoapi_prefect.prefect.server import UNUSED_SERVICES, PrefectServer, free_port  # noqa: E402

SERVE = """
import os, sys
from werkzeug.serving import make_server
if os.environ.get("BENCH_MEMORY_DUMPS"):
    import memdump  # benchmarks/memdump.py: tracemalloc, dumps on SIGUSR1/SIGUSR2
    memdump.install(os.environ["BENCH_MEMORY_DUMPS"])
module = __import__(sys.argv[1], fromlist=["APP"])
make_server("127.0.0.1", int(sys.argv[2]), module.APP, threaded=True).serve_forever()
"""
MIB = 1024 * 1024
RECORDER = "recorder"
SLEEPER = "sleeper"
#: The managers, in the table's column order.
NAMES = {"tinydb": "TinyDB", "postgresql": "PostgreSQL", "prefect": "Prefect"}


def start_lean_prefect(work: Path) -> PrefectServer:
    """A started Prefect server in ``work`` without the services jobs do not need."""
    prefect = PrefectServer(
        work / "prefect-home", port=free_port(), disabled_services=UNUSED_SERVICES
    )
    log(f"starting a Prefect server in {work} ...")
    prefect.start(timeout=120)
    return prefect


def apply_options(manager: dict[str, Any], options: list[str]) -> None:
    """Set each ``KEY=YAML`` of ``--manager-option`` (dotted keys) in ``manager``."""
    for option in options:
        key, _, value = option.partition("=")
        *parents, leaf = key.split(".")
        target = manager
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = yaml.safe_load(value)


def write_config(folder: Path, port: int, manager: dict, processors: dict | None = None) -> Path:
    config = yaml.safe_load((ROOT / "example-config.yml").read_text())
    for process_id, processor in (processors or {}).items():
        config["resources"][process_id]["processor"] = processor
    # hello-world that notes each run (benchmarks/recording.py), for the bursts,
    # and one that sleeps first (an I/O-bound job), for concurrency and dismiss.
    for process_id, name in ((RECORDER, "RecordingHelloWorld"), (SLEEPER, "Sleeper")):
        resource = json.loads(json.dumps(config["resources"]["hello-world"]))
        resource["processor"] = {"name": f"recording.{name}"}
        config["resources"][process_id] = resource
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
        "BENCH_PIDS_FILE": str(folder / "pids.txt"),
    }
    process = subprocess.Popen(
        serve_command(app_module, port, server, workers),
        env=env,
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=(folder / "server.log").open("wb"),
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300  # 4 gunicorn workers on a loaded 2-core machine
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/processes", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.2)
    process.terminate()  # gunicorn's master stops its workers
    process.wait(30)
    raise RuntimeError(f"pygeoapi did not start; see {folder / 'server.log'}")


def _status_kib(pid: int, key: str, path: str = "status") -> float:
    for line in Path(f"/proc/{pid}/{path}").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return float(line.split()[1])
    raise RuntimeError(f"no {key} for process {pid}")


def rss_mib(pid: int) -> float:
    """Resident set size of a process, in MiB (Linux)."""
    return _status_kib(pid, "VmRSS") * 1024 / MIB


def pss_mib(pid: int) -> float:
    """Proportional set size of a process, in MiB: shared pages split among their users.

    The figure for forked (copy-on-write) processes, whose RSS each counts
    the pages they share with their template in full.
    """
    return _status_kib(pid, "Pss", "smaps_rollup") * 1024 / MIB


def _tree(pid: int) -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return children


def _tree_sum(pid: int, skip: Callable[[int], bool], size: Callable[[int], float]) -> float:
    # ``size`` of ``pid`` and its descendants, leaving out (with theirs) those ``skip`` names.
    children = _tree(pid)
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            if skip(current):
                continue
            total += size(current)
        except (OSError, RuntimeError):
            continue
        todo.extend(children.get(current, []))
    return total


def rss_tree_mib(pid: int) -> float:
    """RSS of a process and all its descendants (PrefectManager's worker processes)."""
    return _tree_sum(pid, lambda _: False, rss_mib)


def pss_tree_mib(pid: int) -> float:
    """PSS of a process and all its descendants: the memory the whole tree costs."""
    return _tree_sum(pid, lambda _: False, pss_mib)


def _is_multiprocessing(pid: int) -> bool:
    # The local pool's template and job processes: spawned by multiprocessing
    # (or forked from such a process: a fork keeps the command line), or
    # forked from the server, named by their command name (execution/seed.py).
    if b"multiprocessing" in Path(f"/proc/{pid}/cmdline").read_bytes():
        return True
    return Path(f"/proc/{pid}/comm").read_text().strip() in (seeds.NAME, seeds.JOB_NAME)


def server_rss_mib(pid: int) -> float:
    """RSS of the web server: ``pid`` and its descendants but the job processes.

    ``pid`` alone under werkzeug; gunicorn's master and its workers under
    gunicorn. Left out: multiprocessing's processes (PrefectManager's local
    job processes, their template and the resource tracker), counted by
    ``rss_tree_mib``.
    """
    return _tree_sum(pid, _is_multiprocessing, rss_mib)


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
    **inputs: Any,
) -> httpx.Response:
    headers = {"Prefer": "respond-async"} if asynchronous else {}
    response = client.post(
        f"/processes/{process}/execution",
        json={"inputs": {"name": name, **inputs}},
        headers=headers,
    )
    response.raise_for_status()
    return response


def job_id_of(response: httpx.Response) -> str:
    return response.headers["Location"].rsplit("/", 1)[-1]


def _timestamp(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


FINISHED = ("successful", "failed", "dismissed")

#: Every error answer of the run, by manager, phase, HTTP status and OGC code.
REFUSALS: Counter[tuple[str, str, str]] = Counter()
#: The manager being measured (the key of REFUSALS).
CURRENT = [""]


def refusal(phase: str, response: httpx.Response) -> str:
    """Note an error answer (status and OGC exception code) and describe it for the log."""
    try:
        body = response.json()
        code = str(body.get("code") or body.get("type") or "-")
        text = str(body.get("description") or body.get("detail") or "")
    except (ValueError, AttributeError):
        code, text = "-", response.text
    REFUSALS[(CURRENT[0], phase, f"{response.status_code} {code}")] += 1
    return f"{response.status_code} {code}: {text[:200]}"


def print_refusals(measured: list[str]) -> None:
    """One line per manager: its error answers by phase, HTTP status and OGC code."""
    for name in measured:
        found = {key: n for key, n in sorted(REFUSALS.items()) if key[0] == name}
        parts = ", ".join(f"{phase}: {n}x {what}" for (_, phase, what), n in found.items())
        print(f"error answers of {NAMES[name]}: {parts or 'none'}")


def wait_done(url: str, job_ids: list[str], timeout: float = 600) -> dict[str, dict]:
    """Poll the jobs until each has ended (or ``timeout``); their last status documents."""
    done: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=url, timeout=60) as client:
        pending = set(job_ids)
        while pending and time.monotonic() < deadline:
            for job_id in list(pending):
                answer = client.get(f"/jobs/{job_id}", params={"f": "json"})
                job = answer.json() if answer.status_code == 200 else {}
                if job.get("status") in FINISHED:
                    pending.discard(job_id)
                    done[job_id] = job
            if pending:
                time.sleep(0.25)
    return done


@dataclass
class Burst:
    seconds: float
    lost: int
    twice: int
    failed: int
    refused: int
    #: The most the whole server tree took while the burst ran (PSS, MiB).
    peak_mib: float = 0.0


def burst(
    url: str,
    ran_file: Path,
    count: int,
    clients: int,
    process: str = RECORDER,
    inputs: dict[str, Any] | None = None,
    sample_pid: int | None = None,
    phase: str = "burst",
) -> Burst:
    """Submit ``count`` async jobs from ``clients`` threads; check each ran once.

    Each job gets its own ``name`` input, which the process notes in
    ``ran_file`` when it runs. The figure is the time from the first submit
    to the latest ``finished`` time the jobs report, so the observer's
    polling (after the runs were noted) neither loads the server during the
    burst nor rounds the figure. With ``sample_pid``, the PSS of that
    process tree is sampled every 0.2 s until every job was noted.
    """
    ran_file.unlink(missing_ok=True)
    names = [f"burst-{uuid.uuid4().hex[:12]}" for _ in range(count)]
    started = time.time()
    refused: list[str] = []
    peak = [0.0]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set() and sample_pid is not None:
            peak[0] = max(peak[0], pss_tree_mib(sample_pid))
            sampling.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    def submit(chunk: list[str]) -> list[tuple[str, str]]:
        accepted = []
        with httpx.Client(base_url=url, timeout=120) as client:
            for name in chunk:
                try:
                    response = execute(client, True, process, name=name, **(inputs or {}))
                    accepted.append((name, job_id_of(response)))
                except httpx.HTTPStatusError as exc:  # e.g. 503: Prefect did not answer in time
                    log(f"  submit {name}: {refusal(phase, exc.response)}")
                    refused.append(name)
        return accepted

    chunks = [names[i::clients] for i in range(clients)]
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        submitted = [pair for chunk in pool.map(submit, chunks) for pair in chunk]
    count -= len(refused)
    names = [name for name in names if name not in set(refused)]
    deadline = time.time() + 600
    while time.time() < deadline:
        noted = ran_file.read_text().splitlines() if ran_file.exists() else []
        if len(noted) >= count:
            break
        time.sleep(0.1)
    sampling.set()
    sampler.join()
    done = wait_done(url, [job_id for _, job_id in submitted], max(1.0, deadline - time.time()))
    finished = {job_id: _timestamp(job["finished"]) for job_id, job in done.items()}
    failed = sum(1 for job in done.values() if job["status"] != "successful")
    runs = Counter(ran_file.read_text().splitlines() if ran_file.exists() else [])
    distinct_ids = len({job_id for _, job_id in submitted})
    lost = sum(1 for name in names if runs[name] == 0) + (count - distinct_ids)
    twice = sum(1 for name in names if runs[name] > 1)
    lost += count - len(finished) if len(finished) < count else 0
    seconds = (max(finished.values()) - started) if finished else float("nan")
    return Burst(seconds, lost, twice, failed, len(refused), peak[0])


def sustained(url: str, clients: int, seconds: float) -> tuple[float, list[str], int]:
    """``clients`` threads submit async jobs back to back for ``seconds``: jobs/s, ids, errors."""
    deadline = time.monotonic() + seconds
    ids: list[str] = []
    errors = [0]

    def loop(index: int) -> None:
        with httpx.Client(base_url=url, timeout=120) as client:
            while time.monotonic() < deadline:
                try:
                    ids.append(job_id_of(execute(client, True, RECORDER, name=f"s{index}")))
                except httpx.HTTPStatusError as exc:
                    log(f"  sustained submit: {refusal('sustained', exc.response)}")
                    errors[0] += 1
                except httpx.HTTPError as exc:
                    log(f"  sustained submit: {exc!r}")
                    REFUSALS[(CURRENT[0], "sustained", type(exc).__name__)] += 1
                    errors[0] += 1

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        list(pool.map(loop, range(clients)))
    return len(ids) / (time.monotonic() - started), ids, errors[0]


def _job_row(now: str) -> dict[str, Any]:
    return {
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


def fill_tinydb(path: Path, count: int) -> None:
    import tinydb

    with tinydb.TinyDB(path) as db:
        db.insert_multiple(_job_row("2026-01-01T00:00:00.000000Z") for _ in range(count))


def fill_postgresql(postgres: Postgres, database: str, count: int) -> None:
    """Insert ``count`` finished jobs into pygeoapi's ``jobs`` table, one statement a 1,000."""
    import psycopg2
    import psycopg2.extras

    now = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [_job_row("") | {"created": now, "started": now, "updated": now, "finished": now}]
    columns = list(rows[0])
    with psycopg2.connect(
        host="127.0.0.1", port=postgres.port, dbname=database, user="postgres"
    ) as connection:
        with connection.cursor() as cursor:
            for start in range(0, count, 1000):
                batch = [
                    [row[c] for c in columns]
                    for row in (
                        rows[0] | {"identifier": str(uuid.uuid1())}
                        for _ in range(min(1000, count - start))
                    )
                ]
                psycopg2.extras.execute_values(
                    cursor, f"INSERT INTO jobs ({', '.join(columns)}) VALUES %s", batch
                )


def fill_prefect(api_url: str, count: int, threads: int = 8) -> None:
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


def fill_prefect_sqlite(db_path: Path, api_url: str, count: int) -> None:
    """Store ``count`` finished job runs quickly: one through the API, cloned in SQLite.

    Prefect on SQLite stores some 30-60 runs a second through its API (much
    fewer on a loaded machine); the clones (new ids, the same tags, labels and
    a Completed state of their own) are written straight into its database,
    1,000 to a transaction, while the server runs.
    """
    import sqlite3

    fill_prefect(api_url, 1, threads=1)
    db = sqlite3.connect(db_path, timeout=60)
    db.row_factory = sqlite3.Row
    try:
        run = dict(
            db.execute(
                "SELECT * FROM flow_run WHERE tags LIKE '%pygeoapi.process:hello-world%'"
                " ORDER BY created DESC LIMIT 1"
            ).fetchone()
        )
        state = dict(
            db.execute("SELECT * FROM flow_run_state WHERE id = ?", (run["state_id"],)).fetchone()
        )
        details = json.loads(state["state_details"])
        for start in range(0, count - 1, 1000):
            runs, states = [], []
            for _ in range(min(1000, count - 1 - start)):
                run_id, state_id = str(uuid.uuid4()), str(uuid.uuid4())
                runs.append(run | {"id": run_id, "state_id": state_id, "idempotency_key": run_id})
                states.append(
                    state
                    | {
                        "id": state_id,
                        "flow_run_id": run_id,
                        "state_details": json.dumps(details | {"flow_run_id": run_id}),
                    }
                )
            with db:
                for table, rows in (("flow_run", runs), ("flow_run_state", states)):
                    columns = list(rows[0])
                    db.executemany(
                        f"INSERT INTO {table} ({', '.join(columns)})"
                        f" VALUES ({', '.join('?' * len(columns))})",
                        [tuple(row[c] for c in columns) for row in rows],
                    )
    finally:
        db.close()


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
    folder: Path
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

    def submits(self, client: httpx.Client, label: str) -> None:
        """Median of async submits; then waits for those jobs, so they load nothing after."""
        ids: list[str] = []

        def submit() -> None:
            ids.append(job_id_of(execute(client, True, RECORDER, name="submit")))

        self.rows[f"async submit, {label} (ms)"] = median_ms(submit, self.args.repeat)
        self.stored += len(ids)
        wait_done(self.url, ids)

    def queries(self, client: httpx.Client, label: str, job_id: str) -> None:
        repeat = self.args.repeat

        def jobs() -> None:
            client.get("/jobs", params={"limit": 10, "f": "json"}).raise_for_status()

        def job() -> None:
            client.get(f"/jobs/{job_id}", params={"f": "json"}).raise_for_status()

        self.rows[f"GET /jobs?limit=10, {label} (ms)"] = median_ms(jobs, repeat)
        self.rows[f"GET /jobs/{{id}}, {label} (ms)"] = median_ms(job, repeat)

    def store_rows(self, client: httpx.Client, label: str, job_id: str) -> None:
        self.queries(client, label, job_id)
        self.rows[f"sync execute, {label} (ms)"] = median_ms(
            lambda: self.sync(client), self.args.repeat
        )
        self.submits(client, label)

    def warm_up(self, client: httpx.Client) -> None:
        self.sync(client)
        client.get("/jobs", params={"limit": 10, "f": "json"}).raise_for_status()
        warm = job_id_of(execute(client, True, RECORDER, name="warm-up"))
        self.stored += 1
        wait_done(self.url, [warm])

    def dismiss(self, client: httpx.Client) -> None:
        """DELETE of running sleepers: the answer's time, and until the job's process is gone."""
        pids_file = self.folder / "pids.txt"
        answers, gone = [], []
        for index in range(self.args.dismisses):
            name = f"dismiss-{index}-{uuid.uuid4().hex[:8]}"
            job_id = job_id_of(execute(client, True, SLEEPER, name=name, seconds=20))
            self.stored += 1
            pid = None
            deadline = time.monotonic() + 120
            while pid is None and time.monotonic() < deadline:
                lines = pids_file.read_text().splitlines() if pids_file.exists() else []
                pid = next((int(p) for n, p in (x.split() for x in lines) if n == name), None)
                time.sleep(0.02)
            if pid is None:
                raise RuntimeError(f"the sleeper {name} never started")
            own = _is_multiprocessing(pid)  # else a thread of the server: it runs on
            started = time.perf_counter()
            client.delete(f"/jobs/{job_id}").raise_for_status()
            answers.append(time.perf_counter() - started)
            if own:
                while Path(f"/proc/{pid}").exists() and time.perf_counter() - started < 30:
                    status = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                    if status[0] == "Z":
                        break  # ended, not yet reaped
                    time.sleep(0.005)
                gone.append(time.perf_counter() - started)
        self.rows["DELETE /jobs/{id} of a running job (ms)"] = statistics.median(answers) * 1000
        self.rows["dismissed job's process gone after (s, max)"] = (
            max(gone) if gone else float("nan")
        )

    def run(self) -> dict[str, float]:
        args = self.args
        small, large = args.small, args.large
        rows = self.rows
        ran = Path(args.ran_file)
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
            rows["sync execute, empty store (ms)"] = median_ms(
                lambda: self.sync(client), args.repeat
            )
            self.submits(client, "empty store")
            self.queries(client, "empty store", job_id)
            log("  dismissing running jobs ...")
            self.dismiss(client)
            if args.quick:
                return rows
            if not args.bursts_only:
                result = burst(self.url, ran, 20, 20, phase="burst of 20")
                self.stored += 20
                rows["burst of 20 hello-world, all done (s)"] = result.seconds
            result = burst(
                self.url, ran, 20, 20, SLEEPER, {"seconds": 1}, self.pid, "burst of 20 sleep"
            )
            self.stored += 20
            rows["burst of 20 sleep(1), all done (s)"] = result.seconds
            rows["whole footprint, 20 sleep(1) running (PSS MiB)"] = result.peak_mib
            if not args.bursts_only:
                self.fill_to(small)
                self.store_rows(client, f"{small} jobs", job_id)
            log(f"  burst of {args.burst} sleep(1) from {args.clients} clients ...")
            result = burst(
                self.url,
                ran,
                args.burst,
                args.clients,
                SLEEPER,
                {"seconds": 1},
                self.pid,
                f"burst of {args.burst} sleep",
            )
            self.stored += args.burst
            rows[f"burst of {args.burst} sleep(1), all done (s)"] = result.seconds
            rows[f"burst of {args.burst} sleep(1): refused (an error answer)"] = float(
                result.refused
            )
            rows[f"whole footprint, {args.burst} sleep(1) queued (PSS MiB)"] = result.peak_mib
            log(f"  burst of {args.burst} async jobs from {args.clients} clients ...")
            result = burst(
                self.url, ran, args.burst, args.clients, phase=f"burst of {args.burst} hello"
            )
            self.stored += args.burst
            rows[f"burst of {args.burst} hello-world, all done (s)"] = result.seconds
            rows[f"burst of {args.burst}: lost / run twice / failed"] = float(
                result.lost * 10_000 + result.twice * 100 + result.failed
            )
            rows[f"burst of {args.burst}: refused (an error answer)"] = float(result.refused)
            log(f"  sustained submissions from 4 clients for {args.sustained} s ...")
            rate, ids, errors = sustained(self.url, 4, args.sustained)
            self.stored += len(ids)
            rows["sustained submissions, 4 clients (jobs/s)"] = rate
            rows["sustained submissions: error answers"] = float(errors)
            wait_done(self.url, ids)
            if args.bursts_only:
                return rows
            log(f"  {args.memory_jobs} sync jobs for the memory figures ...")
            half = args.memory_jobs // 2

            def many(count: int) -> None:
                def one(_: int) -> None:
                    with httpx.Client(base_url=self.url, timeout=120) as own:
                        for _ in range(count // 4):
                            try:
                                execute(own)
                            except httpx.HTTPStatusError as exc:
                                log(f"  sync job: {refusal('sync jobs', exc.response)}")
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
            self.store_rows(client, f"{large} jobs", job_id)
        return rows


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


Target = Callable[[dict[str, float]], tuple[str, bool | None]]


def _targets(args: argparse.Namespace) -> dict[str, Target]:
    # Issue 15's targets (and issue 5's kept ones), each as (text, met) from
    # the row's values by manager; None where a peer needed is not measured.
    small, large = args.small, args.large

    def vs(peer: str, limit: float, text: str = "") -> Target:
        def check(v: dict[str, float]) -> tuple[str, bool | None]:
            shown = text or f"<= {limit:g}x {NAMES[peer]}"
            if peer not in v or "prefect" not in v:
                return shown, None
            return shown, v["prefect"] <= limit * v[peer]

        return check

    def at_least(peer: str, factor: float) -> Target:
        def check(v: dict[str, float]) -> tuple[str, bool | None]:
            shown = f">= {factor:g}x {NAMES[peer]}"
            if peer not in v or "prefect" not in v:
                return shown, None
            return shown, v["prefect"] >= factor * v[peer]

        return check

    def absolute(limit: float) -> Target:
        def check(v: dict[str, float]) -> tuple[str, bool | None]:
            return f"<= {limit:g}", v["prefect"] <= limit if "prefect" in v else None

        return check

    def plus(peer: str, mib: float) -> Target:
        def check(v: dict[str, float]) -> tuple[str, bool | None]:
            shown = f"<= {NAMES[peer]} + {mib:g}"
            if peer not in v or "prefect" not in v:
                return shown, None
            return shown, v["prefect"] <= v[peer] + mib

        return check

    def zero(v: dict[str, float]) -> tuple[str, bool | None]:
        return "0 / 0 / 0", v["prefect"] == 0 if "prefect" in v else None

    targets: dict[str, Target] = {
        "sync execute, empty store (ms)": vs("tinydb", 2.5),
        "async submit, empty store (ms)": vs("tinydb", 2),
        "GET /jobs?limit=10, empty store (ms)": vs("tinydb", 2),
        f"GET /jobs?limit=10, {small} jobs (ms)": vs("tinydb", 1),
        f"GET /jobs?limit=10, {large} jobs (ms)": absolute(20),
        f"sync execute, {large} jobs (ms)": vs("tinydb", 0.5),
        f"GET /jobs/{{id}}, {large} jobs (ms)": vs("tinydb", 0.5),
        "burst of 20 sleep(1), all done (s)": vs("tinydb", 1.5),
        f"burst of {args.burst} sleep(1), all done (s)": vs("tinydb", 2),
        "burst of 20 hello-world, all done (s)": vs("tinydb", 1),
        "whole footprint, 20 sleep(1) running (PSS MiB)": plus("tinydb", 100),
        "DELETE /jobs/{id} of a running job (ms)": absolute(50),
        "dismissed job's process gone after (s, max)": absolute(1),
        f"burst of {args.burst}: lost / run twice / failed": zero,
        f"burst of {args.burst}: refused (an error answer)": absolute(0),
        "sustained submissions, 4 clients (jobs/s)": at_least("tinydb", 1),
        f"RSS growth over the last {args.memory_jobs - args.memory_jobs // 2} jobs (MiB)": (
            absolute(5)
        ),
    }
    # At 10,000 jobs, no figure slower than the PostgreSQL manager's.
    for row in (f"GET /jobs/{{id}}, {large} jobs (ms)", f"async submit, {large} jobs (ms)"):
        targets.setdefault(row, vs("postgresql", 1))
    return targets


def _extra_targets(
    args: argparse.Namespace,
) -> dict[str, Target]:
    # A second target on the same row: the 10,000-job rows against PostgreSQL.
    large = args.large

    def vs_pg(v: dict[str, float]) -> tuple[str, bool | None]:
        if "postgresql" not in v or "prefect" not in v:
            return "<= 1x PostgreSQL", None
        return "<= 1x PostgreSQL", v["prefect"] <= v["postgresql"]

    return {
        f"GET /jobs?limit=10, {large} jobs (ms)": vs_pg,
        f"sync execute, {large} jobs (ms)": vs_pg,
        f"GET /jobs/{{id}}, {large} jobs (ms)": vs_pg,
    }


def _shown(row: str, value: float | None) -> str:
    if value is None:
        return "-"
    if "lost" in row:
        v = int(value)
        return f"{v // 10_000}/{v // 100 % 100}/{v % 100}"
    return "-" if math.isnan(value) else f"{value:.1f}"


def _ratio(row: str, value: float | None, peer: float | None) -> str:
    if "lost" in row or value is None or peer is None or not peer or math.isnan(value + peer):
        return "-"
    return f"{value / peer:.2f}x"


def print_table(rows: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    small, large = args.small, args.large
    for values in rows.values():
        for what in ("GET /jobs?limit=10", "GET /jobs/{id}"):
            if f"{what}, {large} jobs (ms)" in values:  # not with --quick
                values[f"{what} growth {small} -> {large}"] = (
                    values[f"{what}, {large} jobs (ms)"] / values[f"{what}, {small} jobs (ms)"]
                )
    targets, extra = _targets(args), _extra_targets(args)
    names = [name for name in NAMES if name in rows]
    order = list(next(iter(rows.values())))
    width = max(len(row) for row in order)
    head = " | ".join(NAMES[name] for name in names)
    ratios = [peer for peer in ("tinydb", "postgresql") if peer in rows and "prefect" in rows]
    ratio_head = "".join(f" P/{NAMES[peer]} |" for peer in ratios)
    print(f"\n| {'measure':<{width}} | {head} |{ratio_head} target | met |")
    print(
        f"|{'-' * (width + 2)}|"
        + "".join("-" * (len(NAMES[n]) + 1) + ":|" for n in names)
        + "".join("-" * (len(NAMES[p]) + 3) + ":|" for p in ratios)
        + "--------|-----|"
    )
    for row in order:
        values = {name: rows[name][row] for name in names if row in rows[name]}
        cells = " | ".join(f"{_shown(row, values.get(n)):>{len(NAMES[n])}}" for n in names)
        ratio_cells = "".join(
            f" {_ratio(row, values.get('prefect'), values.get(p)):>{len(NAMES[p]) + 2}} |"
            for p in ratios
        )
        checks = [check(values) for check in (targets.get(row), extra.get(row)) if check]
        target = "; ".join(text for text, _ in checks)
        marks = [met for _, met in checks if met is not None]
        mark = "" if not marks else ("yes" if all(marks) else "NO")
        print(f"| {row:<{width}} | {cells} |{ratio_cells} {target} | {mark} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30, help="requests per median")
    parser.add_argument("--small", type=int, default=1000, help="stored jobs, small store")
    parser.add_argument("--large", type=int, default=10_000, help="stored jobs, large store")
    parser.add_argument("--burst", type=int, default=200, help="async jobs in the big bursts")
    parser.add_argument("--clients", type=int, default=20, help="client threads of the bursts")
    parser.add_argument("--dismisses", type=int, default=10, help="running jobs dismissed")
    parser.add_argument(
        "--sustained", type=float, default=10, help="seconds of sustained submissions"
    )
    parser.add_argument(
        "--memory-jobs", type=int, default=2000, help="sync jobs between the RSS samples"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=tuple(NAMES),
        help="measure this manager only (repeat for several; for profiling)",
    )
    parser.add_argument(
        "--manager-option",
        action="append",
        default=[],
        metavar="KEY=YAML",
        help="extra server.manager key for PrefectManager (e.g. local.max_workers=4)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the empty-store rows and the dismiss only (a before/after of the request paths)",
    )
    parser.add_argument(
        "--bursts-only",
        action="store_true",
        help="the empty-store rows, the dismiss, the bursts and the sustained submissions only"
        " (no filling of the stores, no memory rows)",
    )
    parser.add_argument(
        "--lean-prefect",
        action="store_true",
        help="start the Prefect server without the services jobs do not need",
    )
    parser.add_argument(
        "--prefect-db",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="the Prefect server's database (postgresql: on the benchmark's PostgreSQL)",
    )
    parser.add_argument(
        "--server",
        choices=("werkzeug", "gunicorn"),
        default="werkzeug",
        help="WSGI server of the pygeoapi servers (gunicorn: gthread, 8 threads a worker)",
    )
    parser.add_argument(
        "--workers", type=int, default=4, help="gunicorn worker processes (with --server gunicorn)"
    )
    args = parser.parse_args()
    args.warm_rounds = 1 if args.server == "werkzeug" else 3 * args.workers
    only = set(args.only or NAMES)

    work = Path(tempfile.mkdtemp(prefix="pygeoapi-prefect-bench-"))
    postgres = Postgres("pygeoapi")
    log(f"starting PostgreSQL and a Prefect server ({args.prefect_db}) in {work} ...")
    postgres.start()
    prefect_url = None
    if args.prefect_db == "postgresql":
        subprocess.run(
            postgres._command(
                "createdb", "-h", "127.0.0.1", "-p", str(postgres.port), "-U", "postgres", "prefect"
            ),
            check=True,
            capture_output=True,
            cwd=postgres.folder,
        )
        prefect_url = postgres.url.rsplit("/", 1)[0] + "/prefect"
    prefect = PrefectServer(
        work / "prefect-home",
        port=free_port(),
        disabled_services=UNUSED_SERVICES if args.lean_prefect else (),
        database_url=prefect_url,
    )
    started = time.monotonic()
    rows: dict[str, dict[str, float]] = {}
    try:
        prefect.start(timeout=120)
        env = dict(os.environ) | {
            "PREFECT_API_URL": prefect.api_url,
            "PREFECT_HOME": str(work / "home"),
        }
        prefect_manager: dict[str, Any] = {
            "name": "pygeoapi_prefect.manager.PrefectManager",
            "results": {"url": str(work / "prefect-results")},
        }
        apply_options(prefect_manager, args.manager_option)
        (work / "postgresql").mkdir()
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
            "postgresql": (
                {
                    "name": "PostgreSQL",
                    "connection": {
                        "host": "127.0.0.1",
                        "port": postgres.port,
                        "database": "pygeoapi",
                        "user": "postgres",
                    },
                    "output_dir": str(work / "postgresql"),
                },
                "pygeoapi.flask_app",
                lambda count: fill_postgresql(postgres, "pygeoapi", count),
            ),
            "prefect": (
                prefect_manager,
                "pygeoapi_prefect.flask_app",
                (lambda count: fill_prefect(prefect.api_url, count))
                if args.prefect_db == "postgresql"
                else (
                    lambda count: fill_prefect_sqlite(
                        work / "prefect-home" / "prefect.db", prefect.api_url, count
                    )
                ),
            ),
        }
        floor = create_floor_ms(prefect.api_url, args.repeat)
        for name, (manager, module, fill) in managers.items():
            if name not in only:
                continue
            folder = work / name
            folder.mkdir(exist_ok=True)
            log(f"{name}: starting pygeoapi ...")
            workers = args.workers if args.server == "gunicorn" else 1
            process, url = start_pygeoapi(
                folder, manager, module, env, server=args.server, workers=workers
            )
            try:
                CURRENT[0] = name
                args.ran_file = str(folder / "ran.txt")
                rows[name] = Phase(url, process.pid, fill, args, folder).run()
            finally:
                process.terminate()
                process.wait(30)
            log(f"{name}: done after {time.monotonic() - started:.0f} s")
    finally:
        prefect.stop()
        postgres.stop()
    print_table(rows, args)
    print()
    print_refusals(list(rows))
    print(
        f"\nPrefect's POST /flow_runs/ alone (empty server, this client): {floor:.1f} ms median"
        " - the floor of a PrefectManager sync execute"
    )
    where = "werkzeug" if args.server == "werkzeug" else f"gunicorn, {args.workers} workers"
    log(f"whole run ({where}, Prefect on {args.prefect_db}): {time.monotonic() - started:.0f} s")
    log(f"work folder {work}")


if __name__ == "__main__":
    main()
