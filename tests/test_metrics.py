"""Prometheus metrics at /metrics: exact across server workers, bounded labels, off means 404.

Every test scrapes a real pygeoapi over HTTP after running real jobs on the
session's Prefect server, and parses the answer with prometheus_client's own
parser.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from ogc import validate
from prometheus_client.parser import text_string_to_metric_families
from servers import KINDS, start_server
from test_callbacks_and_links import Receiver

from pygeoapi_prefect.config import load_config
from pygeoapi_prefect.errors import ConfigError
from pygeoapi_prefect.metrics import PREFIX, route_of
from pygeoapi_prefect.prefect.server import free_port

UUID = re.compile(r"[0-9a-f]{8}-?([0-9a-f]{4}-?){3}[0-9a-f]{12}", re.IGNORECASE)
ROUTE = re.compile(r"(/([a-z_]+|\{id\}|\{name\}))*/?")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(base_url: str, path: str = "/metrics") -> tuple[Samples, str]:
    """Every sample of a scrape by (name, labels), and the raw text (on a new connection)."""
    response = httpx.get(f"{base_url}{path}", timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples, response.text


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def label_values(samples: Samples) -> set[str]:
    return {value for (_, labels) in samples for _, value in labels}


def eventually(check: Callable[[], bool], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("the metrics never reached the expected values")
        time.sleep(0.5)


def post(base_url: str, process: str, inputs: dict[str, Any], **extra: Any) -> httpx.Response:
    # A new connection each time, so that gunicorn's workers share the requests.
    headers = {"Prefer": "respond-async"} if extra.pop("asynchronous", False) else {}
    return httpx.post(
        f"{base_url}/processes/{process}/execution",
        json={"inputs": inputs, **extra},
        headers=headers,
        timeout=60,
    )


def wait_done(base_url: str, job_id: str, *statuses: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        status = httpx.get(f"{base_url}/jobs/{job_id}", params={"f": "json"}, timeout=30).json()
        if status.get("status") in statuses:
            return
        assert time.monotonic() < deadline, f"job {job_id} never reached {statuses}: {status}"
        time.sleep(0.2)


def assert_bounded(samples: Samples) -> None:
    values = label_values(samples)
    assert not [v for v in values if UUID.search(v)], "a label value holds an id"
    routes = {dict(ls)["route"] for (n, ls) in samples if "route" in dict(ls)}
    assert routes, "no Prefect API call was timed"
    assert all(ROUTE.fullmatch(r) for r in routes), routes
    assert all(name.startswith(PREFIX) for name, _ in samples)


@pytest.mark.parametrize("kind", KINDS)
def test_counts_add_up_exactly_over_three_workers(
    prefect_server: Any, tmp_path: Path, kind: str
) -> None:
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    extra: tuple[str, ...] = ()
    if kind != "uvicorn":
        # The gunicorn config file docs/operating.md shows (uvicorn has no such hook).
        conf = tmp_path / "gunicorn.conf.py"
        conf.write_text("from pygeoapi_prefect.metrics import child_exit  # noqa: F401\n")
        extra = ("--config", str(conf))
    server = start_server(
        kind,
        tmp_path / "server",
        prefect_server.api_url,
        workers=3,
        extra=extra,
        env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
    )
    base = server.base_url
    try:
        sync_ok = sync_failed = async_ok = 0
        async_ids: list[str] = []

        def one_round() -> None:
            nonlocal sync_ok, sync_failed, async_ok
            # Several requests at once, each on its own connection: the workers share them.
            with ThreadPoolExecutor(6) as pool:
                syncs = [pool.submit(post, base, "hello-world", {"name": "m"}) for _ in range(4)]
                fails = [pool.submit(post, base, "fail", {"what": "m"})]
                asyncs = [
                    pool.submit(post, base, "hello-world", {"name": "a"}, asynchronous=True)
                    for _ in range(3)
                ]
            assert all(f.result().status_code == 200 for f in syncs)
            assert all(f.result().status_code == 500 for f in fails)
            assert all(f.result().status_code == 201 for f in asyncs)
            sync_ok += len(syncs)
            sync_failed += len(fails)
            async_ok += len(asyncs)
            async_ids.extend(f.result().json()["jobID"] for f in asyncs)

        # Until at least two workers have taken jobs (their counter files).
        for _ in range(10):
            one_round()
            if len(list(metrics_dir.glob("counter_*.db"))) >= 2:
                break
        assert len(list(metrics_dir.glob("counter_*.db"))) >= 2, "one worker took every job"
        # One async job dismissed while it runs.
        dismissed = post(base, "sleep", {"seconds": 60}, asynchronous=True).json()["jobID"]
        wait_done(base, dismissed, "running")
        assert httpx.delete(f"{base}/jobs/{dismissed}", timeout=30).status_code == 200
        for job_id in async_ids:
            wait_done(base, job_id, "successful")

        n_sync = sync_ok + sync_failed
        n_async = async_ok + 1
        expected_finished = {
            "successful": sync_ok + async_ok,
            "failed": sync_failed,
            "dismissed": 1,
        }
        name = PREFIX + "jobs_finished_total"

        def all_ended() -> bool:
            samples, _ = scrape(base)
            return total(samples, name) >= n_sync + n_async and (
                total(samples, PREFIX + "jobs_running") == 0
            )

        eventually(all_ended)
        time.sleep(2)  # a double count would land by now
        samples, text = scrape(base)
        submitted = PREFIX + "jobs_submitted_total"
        assert total(samples, submitted, mode="sync") == n_sync
        assert total(samples, submitted, mode="async") == n_async
        assert total(samples, submitted, process="hello-world") == sync_ok + async_ok
        for outcome, count in expected_finished.items():
            assert total(samples, name, outcome=outcome) == count, outcome
        assert total(samples, PREFIX + "job_run_seconds_count") == n_sync + n_async
        assert total(samples, PREFIX + "job_queue_wait_seconds_count") == n_async
        assert total(samples, PREFIX + "jobs_queued") == 0
        assert total(samples, PREFIX + "jobs_running") == 0
        assert total(samples, PREFIX + "pool_busy_workers") == 0
        # Each worker that took an async job started its pool of one process.
        assert 1 <= total(samples, PREFIX + "pool_workers") <= 3
        timed = PREFIX + "prefect_api_request_seconds_count"
        creates = total(samples, timed, method="POST", route="/flow_runs/")
        assert creates >= n_sync + n_async
        assert_bounded(samples)
        # Any worker answers the same sums.
        again, _ = scrape(base)
        assert total(again, submitted) == n_sync + n_async
        assert total(again, name) == n_sync + n_async
    finally:
        server.stop()


def test_single_process_app_counts_jobs_and_callbacks(pygeoapi_factory: Any) -> None:
    server = pygeoapi_factory(manager={"callbacks": {"allow": ["127.0.0.1/32"], "retries": 0}})
    receiver = Receiver()
    failing = Receiver(failures=1)  # answers 500: with no retries, the delivery fails
    for _ in range(3):
        assert server.execute("hello-world", {"name": "s"}).status_code == 200
    ids = [
        server.execute("hello-world", {"name": "a"}, asynchronous=True).json()["jobID"]
        for _ in range(2)
    ]
    ids.append(
        server.execute(
            "hello-world", {"name": "cb"}, asynchronous=True, subscriber=receiver.subscriber()
        ).json()["jobID"]
    )
    for job_id in ids:
        server.wait_for(job_id, "successful", timeout=120)
    receiver.wait_for("/success")
    # A sync job's failure, and a callback that fails.
    response = server.execute("fail", {"what": "x"}, subscriber=failing.subscriber())
    assert response.status_code == 500

    def settled() -> bool:
        samples, _ = scrape(server.base_url)
        return total(samples, PREFIX + "callbacks_total", outcome="failed") == 1 and (
            total(samples, PREFIX + "jobs_finished_total") == 7
        )

    eventually(settled)
    samples, _ = scrape(server.base_url)
    assert total(samples, PREFIX + "jobs_submitted_total", mode="sync") == 4
    assert total(samples, PREFIX + "jobs_submitted_total", mode="async") == 3
    assert total(samples, PREFIX + "jobs_finished_total", outcome="successful") == 6
    assert total(samples, PREFIX + "jobs_finished_total", outcome="failed") == 1
    assert total(samples, PREFIX + "job_run_seconds_count", process="hello-world") == 6
    assert total(samples, PREFIX + "job_queue_wait_seconds_count") == 3
    # inProgressUri and successUri of the async job.
    assert total(samples, PREFIX + "callbacks_total", outcome="delivered") == 2
    assert total(samples, PREFIX + "pool_workers") == 32  # local.max_workers by default
    assert_bounded(samples)


def test_metrics_off_answer_404_and_prefect_errors_are_counted(pygeoapi_factory: Any) -> None:
    off = pygeoapi_factory(manager={"metrics": {"enabled": False}})
    response = httpx.get(f"{off.base_url}/metrics", timeout=30)
    assert response.status_code == 404
    document = response.json()
    validate(document, "exception")
    assert "server.manager.metrics.enabled" in document["detail"]

    # Elsewhere, and with Prefect out of reach: the failed calls are counted by route.
    down = pygeoapi_factory(
        prefect_api_url=f"http://127.0.0.1:{free_port()}/api",
        manager={"metrics": {"path": "/internal/metrics"}, "api_timeout": 1},
    )
    assert down.execute("hello-world", {"name": "x"}).status_code == 200
    samples, _ = scrape(down.base_url, "/internal/metrics")
    errors = PREFIX + "prefect_api_errors_total"
    assert total(samples, errors, error="unavailable") >= 1
    assert total(samples, errors, method="POST", route="/flows/", error="unavailable") >= 1
    assert total(samples, PREFIX + "jobs_finished_total", outcome="successful") == 1
    assert httpx.post(f"{down.base_url}/internal/metrics", timeout=30).status_code == 405


def test_routes_keep_no_ids_or_names() -> None:
    job = "0b8f6f0e-5c2a-4bb1-9d1c-3c6bde1d2f10"
    assert route_of(f"/flow_runs/{job}/set_state") == "/flow_runs/{id}/set_state"
    assert route_of("/flow_runs/") == "/flow_runs/"
    assert route_of("/variables/name/pygeoapi_lease_abc") == "/variables/name/{name}"
    assert route_of("/deployments/name/my-flow/my-deployment") == "/deployments/name/{name}/{name}"
    assert route_of("/a/b/c/d/e/f/g/h") == "/{name}/{name}/{name}/{name}/{name}"
    assert route_of(f"/automations/{job}?x=1") == "/automations/{id}"
    assert route_of("/flow_runs/bulk_delete") == "/flow_runs/bulk_delete"


@pytest.mark.parametrize(
    ("path", "problem"),
    [("metrics", "a path like /metrics"), ("/jobs/metrics", "a route of OGC API - Processes")],
)
def test_metrics_path_is_checked(path: str, problem: str) -> None:
    with pytest.raises(ConfigError, match="server.manager.metrics.path") as caught:
        load_config({"name": "x", "metrics": {"path": path}})
    assert problem in str(caught.value)


def test_serve_adds_up_its_workers_by_itself(pygeoapi_factory: Any) -> None:
    server = pygeoapi_factory(workers=2)
    found = re.search(r"metrics of the 2 workers add up in (\S+)", server.log_path.read_text())
    assert found, server.log_path.read_text()
    folder = Path(found.group(1))
    jobs = 0
    for _ in range(10):
        with ThreadPoolExecutor(4) as pool:
            answers = list(
                pool.map(lambda _: post(server.base_url, "hello-world", {"name": "s"}), range(4))
            )
        assert all(a.status_code == 200 for a in answers)
        jobs += len(answers)
        if len(list(folder.glob("counter_*.db"))) >= 2:
            break
    assert len(list(folder.glob("counter_*.db"))) >= 2, "one worker took every job"
    samples, _ = scrape(server.base_url)
    assert total(samples, PREFIX + "jobs_submitted_total") == jobs
    assert total(samples, PREFIX + "jobs_finished_total", outcome="successful") == jobs
    assert total(samples, PREFIX + "job_run_seconds_count") == jobs
    server.stop()
    assert not folder.exists(), "serve leaves its metrics folder behind"


def test_a_killed_uvicorn_workers_gauges_leave_the_sums(
    prefect_server: Any, tmp_path: Path
) -> None:
    # uvicorn has no child_exit hook: the next scrape drops a dead process's live gauges.
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    server = start_server(
        "uvicorn",
        tmp_path / "server",
        prefect_server.api_url,
        workers=2,
        env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
    )
    try:
        # Until both workers have started their pool of one process.
        for _ in range(20):
            answer = post(server.base_url, "hello-world", {"name": "k"}, asynchronous=True)
            wait_done(server.base_url, answer.json()["jobID"], "successful")
            samples, _ = scrape(server.base_url)
            if total(samples, PREFIX + "pool_workers") == 2:
                break
        assert total(samples, PREFIX + "pool_workers") == 2
        pids = {int(p.stem.rsplit("_", 1)[1]) for p in metrics_dir.glob("gauge_livesum_*.db")}
        victim = sorted(pids)[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while Path(f"/proc/{victim}").exists():
            assert time.monotonic() < deadline, "the killed worker is still there"
            time.sleep(0.1)

        def dropped() -> bool:
            try:
                samples, _ = scrape(server.base_url)
            except httpx.HTTPError:
                return False  # the connection went to the dying worker
            return total(samples, PREFIX + "pool_workers") == 1

        eventually(dropped)
        assert not list(metrics_dir.glob(f"gauge_livesum_{victim}.db"))
        # Its counts stay: counters are not live.
        samples, _ = scrape(server.base_url)
        assert total(samples, PREFIX + "jobs_submitted_total") >= 2
    finally:
        server.stop()


def test_an_unusable_multiprocess_folder_fails_no_job(prefect_server: Any, tmp_path: Path) -> None:
    not_a_folder = tmp_path / "metrics-file"
    not_a_folder.write_text("")
    server = start_server(
        "uvicorn",
        tmp_path / "server",
        prefect_server.api_url,
        workers=1,
        env={"PROMETHEUS_MULTIPROC_DIR": str(not_a_folder)},
    )
    try:
        assert post(server.base_url, "hello-world", {"name": "x"}).status_code == 200
        job_id = post(server.base_url, "hello-world", {"name": "y"}, asynchronous=True).json()
        wait_done(server.base_url, job_id["jobID"], "successful")
        response = httpx.get(f"{server.base_url}/metrics", timeout=30)
        assert response.status_code == 503
        document = response.json()
        validate(document, "exception")
        assert f"PROMETHEUS_MULTIPROC_DIR={not_a_folder}" in document["detail"]
    finally:
        server.stop()
