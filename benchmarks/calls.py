"""The Prefect calls on the request path of each kind of job request, and their medians.

    .venv/bin/python benchmarks/calls.py [--repeat 30] [--auth] [--manager-option KEY=YAML]

Starts a Prefect server (without the services jobs do not need) and serves
``pygeoapi_prefect.flask_app:APP`` in this process (Flask's test client: no
WSGI server, so the figures are the manager's own). Every Prefect API call
made by the thread serving a request is noted (method, route, milliseconds);
calls of other threads (the local pool, background writes) are not on the
request path and are counted apart. For each request kind the table gives
the request's median, and per route the calls a request made and their
median. ``--auth`` turns ``server.manager.auth`` on (a trusted proxy's
headers), where reading results checks the run's owner.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from core import apply_options, start_lean_prefect, write_config  # noqa: E402

import pygeoapi_prefect.metrics as metrics  # noqa: E402
from pygeoapi_prefect.prefect.api import PrefectAPI  # noqa: E402
from pygeoapi_prefect.prefect.server import free_port  # noqa: E402

Call = tuple[str, str, float]
_calls: list[Call] = []
#: Calls of threads that serve no request: (thread, call).
_others: list[tuple[int, Call]] = []
_serving: set[int] = set()
_original = PrefectAPI.request


def _traced(self: PrefectAPI, method: str, path: str, **kwargs: Any) -> Any:
    started = time.perf_counter()
    try:
        return _original(self, method, path, **kwargs)
    finally:
        call = (method, metrics.route_of(path), (time.perf_counter() - started) * 1000)
        if threading.get_ident() in _serving:
            _calls.append(call)
        else:
            _others.append((threading.get_ident(), call))


def measure(send: Callable[[], Any], repeat: int) -> tuple[float, list[list[Call]]]:
    """Median ms of ``send`` and the Prefect calls each request made in its own thread."""
    for _ in range(3):
        send()
    times, per_request = [], []
    _serving.add(threading.get_ident())
    try:
        for _ in range(repeat):
            _calls.clear()
            started = time.perf_counter()
            send()
            times.append((time.perf_counter() - started) * 1000)
            per_request.append(list(_calls))
    finally:
        _serving.discard(threading.get_ident())
    return statistics.median(times), per_request


def report(kind: str, median: float, per_request: list[list[Call]]) -> None:
    durations: dict[str, list[float]] = defaultdict(list)
    for calls in per_request:
        for method, route, ms in calls:
            durations[f"{method} {route}"].append(ms)
    print(f"| {kind} | **{median:.1f} ms** | | |")
    for call, samples in durations.items():
        per = len(samples) / len(per_request)
        print(f"| | `{call}` | {per:.2g} | {statistics.median(samples):.1f} ms |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30, help="requests per median")
    parser.add_argument("--auth", action="store_true", help="server.manager.auth on")
    parser.add_argument(
        "--manager-option",
        action="append",
        default=[],
        metavar="KEY=YAML",
        help="extra server.manager key (e.g. local.async_visible_after=0)",
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="pygeoapi-prefect-calls-"))
    prefect = start_lean_prefect(work)
    try:
        manager: dict[str, Any] = {
            "name": "pygeoapi_prefect.manager.PrefectManager",
            "results": {"url": str(work / "results")},
            # Every sleeper dismissed below runs at once.
            "local": {"max_workers": args.repeat + 4},
        }
        apply_options(manager, args.manager_option)
        headers: dict[str, str] = {}
        if args.auth:
            manager["auth"] = {"mode": "header"}
            headers = {"X-Forwarded-User": "alice"}
        config = write_config(work, free_port(), manager)
        from pygeoapi_prefect.cli.main import write_openapi

        write_openapi(config, work / "openapi.yml")
        os.environ.update(
            PYGEOAPI_CONFIG=str(config),
            PYGEOAPI_OPENAPI=str(work / "openapi.yml"),
            PREFECT_API_URL=prefect.api_url,
            PREFECT_HOME=str(work / "home"),
            BENCH_RAN_FILE=str(work / "ran.txt"),
            BENCH_PIDS_FILE=str(work / "pids.txt"),
        )
        PrefectAPI.request = _traced  # type: ignore[method-assign]
        from pygeoapi_prefect.flask_app import APP

        client = APP.test_client()

        def execute(process: str = "hello-world", asynchronous: bool = False, **inputs: Any) -> Any:
            prefer = {"Prefer": "respond-async"} if asynchronous else {}
            response = client.post(
                f"/processes/{process}/execution",
                json={"inputs": {"name": "calls", **inputs}},
                headers=headers | prefer,
            )
            assert response.status_code in (200, 201), response.get_data(as_text=True)
            return response

        def job_id(response: Any) -> str:
            return str(response.headers["Location"]).rsplit("/", 1)[-1]

        def done(ids: list[str]) -> None:
            for identifier in ids:
                for _ in range(600):
                    status = client.get(f"/jobs/{identifier}?f=json", headers=headers).json
                    if status and status["status"] not in ("accepted", "running"):
                        break
                    time.sleep(0.05)

        print("| request | Prefect call (request thread) | calls a request | median |")
        print("|---|---|--:|--:|")
        report("sync execute", *measure(lambda: execute(), args.repeat))
        submitted: list[str] = []
        before = len(_others)
        report(
            "async submit",
            *measure(lambda: submitted.append(job_id(execute(asynchronous=True))), args.repeat),
        )
        done(submitted)
        time.sleep(1)  # the background writes that follow the end (the run's name)
        main_thread = threading.get_ident()
        job_calls: dict[str, int] = defaultdict(int)
        for thread, (method, route, _) in _others[before:]:
            if thread != main_thread:  # not done()'s status reads
                job_calls[f"{method} {route}"] += 1
        jobs_run = len(submitted)  # measure()'s warm-up jobs ran too
        print(f"| async hello-world job, off the request path ({jobs_run} jobs) | | | |")
        for call, count in sorted(job_calls.items()):
            print(f"| | `{call}` | {count / jobs_run:.2g} | |")
        finished = submitted[-1]
        report(
            "GET /jobs?limit=10",
            *measure(lambda: client.get("/jobs?limit=10&f=json", headers=headers), args.repeat),
        )
        report(
            "GET /jobs/{id}",
            *measure(lambda: client.get(f"/jobs/{finished}?f=json", headers=headers), args.repeat),
        )
        report(
            "GET /jobs/{id}/results",
            *measure(
                lambda: client.get(f"/jobs/{finished}/results?f=json", headers=headers),
                args.repeat,
            ),
        )
        running: list[str] = []
        for _ in range(args.repeat + 3):
            running.append(job_id(execute("sleeper", asynchronous=True, seconds=600)))
        pids = work / "pids.txt"
        for _ in range(600):  # every sleeper has started
            if pids.exists() and len(pids.read_text().splitlines()) >= len(running):
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("the sleepers never all started")
        queue = list(running)
        report(
            "DELETE /jobs/{id} (running)",
            *measure(lambda: client.delete(f"/jobs/{queue.pop()}", headers=headers), args.repeat),
        )
        others: dict[str, int] = defaultdict(int)
        for _, (method, route, _) in _others:
            others[f"{method} {route}"] += 1
        print("\nOther threads (pool, background), all requests:", dict(others))
    finally:
        prefect.stop()


if __name__ == "__main__":
    main()
