"""Retention: ``pygeoapi-prefect prune`` and the in-server sweep, on a real Prefect server.

Each test serves processes of its own (ids with a random suffix), so that a
prune here never touches the jobs of the other tests on the shared server.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from typing import Any

import pytest
import s3fs
from conftest import Pygeoapi, server_env

from pygeoapi_prefect.config import load_config, parse_duration
from pygeoapi_prefect.errors import ConfigError

#: Seconds between the old jobs and the recent one.
GAP = 16.0


def _processes(*kinds: str) -> dict[str, str | dict[str, Any]]:
    suffix = uuid.uuid4().hex[:8]
    known = {"hello": "HelloWorld", "sleep": "pygeoapi_test_processes.SleepProcessor"}
    return {f"ret-{kind}-{suffix}": known[kind] for kind in kinds}


def _prune(server: Pygeoapi, prefect_api_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = server_env(prefect_api_url, server.config_path.parent / "prefect-home")
    env["PYGEOAPI_CONFIG"] = str(server.config_path)
    return subprocess.run(
        [sys.executable, "-m", "pygeoapi_prefect.cli", "prune", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _sync_job(server: Pygeoapi, process_id: str, name: str) -> str:
    response = server.execute(process_id, {"name": name})
    assert response.status_code == 200, response.text
    return response.headers["Location"].rsplit("/", 1)[-1]


def test_prune_by_age_dry_run_then_for_real(pygeoapi_factory, prefect_server):
    processes = _processes("hello", "sleep")
    hello, sleep = processes
    server = pygeoapi_factory(processes=processes)
    finished = [_sync_job(server, hello, f"old {i}") for i in range(3)]
    old = time.monotonic()
    running = server.execute(sleep, {"seconds": 120}, asynchronous=True).json()["jobID"]
    server.wait_for(running, "running")
    time.sleep(GAP)
    recent = _sync_job(server, hello, "recent")
    for job_id in finished:
        assert (server.results_dir / job_id / "manifest.json").exists()

    def between() -> str:
        # Older than the old jobs' age minus half the gap: the old ones are past
        # it, the recent one is not (whatever the command's start-up takes, up
        # to half the gap).
        return f"{time.monotonic() - old - GAP / 2:.1f}"

    dry = _prune(server, prefect_server.api_url, "--dry-run", "--max-age", between())
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("would prune 3 finished job(s)")
    for job_id in finished:  # nothing deleted
        assert server.job(job_id).status_code == 200
        assert (server.results_dir / job_id / "manifest.json").exists()

    done = _prune(server, prefect_server.api_url, "--max-age", between())
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("pruned 3 finished job(s)")
    assert "pruned 3 job(s) so far" in done.stderr  # progress on stderr
    for job_id in finished:
        assert server.job(job_id).status_code == 404
        results = server.client.get(f"/jobs/{job_id}/results", params={"f": "json"})
        assert results.status_code == 404
        assert results.json()["type"].endswith("no-such-job")
        assert not (server.results_dir / job_id).exists()
    # Neither the running job nor the recent one is touched.
    assert server.job(running).json()["status"] == "running"
    assert server.job(recent).json()["status"] == "successful"
    listed = {j["jobID"] for j in server.client.get("/jobs", params={"limit": 100}).json()["jobs"]}
    assert not listed & set(finished)
    assert server.client.delete(f"/jobs/{running}").status_code == 200


def test_prune_keeps_the_newest_max_jobs(pygeoapi_factory, prefect_server):
    processes = _processes("hello")
    (hello,) = processes
    server = pygeoapi_factory(processes=processes, manager={"retention": {"max_jobs": 2}})
    made = [_sync_job(server, hello, f"job {i}") for i in range(5)]
    done = _prune(server, prefect_server.api_url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("pruned 3 finished job(s)")
    assert [server.job(j).status_code for j in made] == [404, 404, 404, 200, 200]


def test_prune_deletes_results_on_s3(s3, pygeoapi_factory, prefect_server):
    processes = _processes("hello")
    (hello,) = processes
    prefix = f"{s3.bucket}/retention-{uuid.uuid4().hex[:8]}"
    server = pygeoapi_factory(
        processes=processes,
        manager={"results": {"url": f"s3://{prefix}", "storage_options": s3.storage_options}},
    )
    job_id = _sync_job(server, hello, "S3")
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3.endpoint})
    assert fs.exists(f"{prefix}/{job_id}/manifest.json")
    done = _prune(server, prefect_server.api_url, "--max-jobs", "0")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("pruned 1 finished job(s)")
    fs.invalidate_cache()
    assert not fs.exists(f"{prefix}/{job_id}/manifest.json")
    assert not fs.exists(f"{prefix}/{job_id}/output")
    assert server.job(job_id).status_code == 404


def test_prune_without_a_limit_says_what_to_set(pygeoapi_factory, prefect_server):
    server = pygeoapi_factory(processes=_processes("hello"))
    done = _prune(server, prefect_server.api_url)
    assert done.returncode == 1
    assert "server.manager.retention.max_age" in done.stderr
    bad = _prune(server, prefect_server.api_url, "--max-age", "soon")
    assert bad.returncode == 2
    assert "--max-age" in bad.stderr and "30d" in bad.stderr


def test_the_sweep_prunes_inside_the_server_one_process_per_period(pygeoapi_factory, prefect_api):
    processes = _processes("hello")
    (hello,) = processes
    server = pygeoapi_factory(
        processes=processes,
        workers=2,
        manager={"retention": {"max_age": 1, "sweep_seconds": 2}},
    )
    made = [_sync_job(server, hello, f"swept {i}") for i in range(3)]
    deadline = time.monotonic() + 90
    while any(server.job(j).status_code != 404 for j in made):
        assert time.monotonic() < deadline, "the sweep did not prune the jobs"
        time.sleep(0.5)
    for job_id in made:
        assert not (server.results_dir / job_id).exists()
    # One period variable per sweep, each naming one holder; old periods are cleaned up.
    variables = prefect_api.request(
        "POST",
        "/variables/filter",
        json={"variables": {"name": {"like_": "pygeoapi_retention_%"}}, "limit": 200},
    ).json()
    periods = sorted(int(v["name"].rsplit("_", 1)[1]) for v in variables)
    assert periods and periods[-1] - periods[0] <= 2
    assert all(isinstance(v["value"], str) and v["value"] for v in variables)


def test_retention_config_reads_durations_and_names_the_key():
    assert [parse_duration(v) for v in ("30d", "12h", "90m", "45s", "1d12h", 60, "2.5")] == [
        2592000.0,
        43200.0,
        5400.0,
        45.0,
        129600.0,
        60.0,
        2.5,
    ]
    config = load_config({"name": "x", "retention": {"max_age": "7d", "max_jobs": 10}})
    assert (config.retention.max_age, config.retention.max_jobs) == (604800.0, 10)
    assert config.retention.sweep_seconds == 0  # off by default
    with pytest.raises(ConfigError, match=r"server\.manager\.retention\.max_age: .*30d"):
        load_config({"name": "x", "retention": {"max_age": "a month"}})
    with pytest.raises(ConfigError, match=r"server\.manager\.retention\.max_jobs"):
        load_config({"name": "x", "retention": {"max_jobs": -1}})


def test_prune_deletes_results_in_each_owners_space(pygeoapi_factory, prefect_server):
    processes = _processes("hello")
    (hello,) = processes
    manager = {
        "auth": {"mode": "header", "header": {"trusted_proxies": ["127.0.0.1/32"]}},
        "retention": {"max_jobs": 0},
    }
    server = pygeoapi_factory(processes=processes, manager=manager)
    user = f"ret-{uuid.uuid4().hex[:6]}"
    as_user = {"X-Forwarded-User": user}
    made = server.client.post(
        f"/processes/{hello}/execution", json={"inputs": {"name": "mine"}}, headers=as_user
    )
    assert made.status_code == 200, made.text
    job_id = made.headers["Location"].rsplit("/", 1)[-1]
    stored = [p for p in server.results_dir.rglob("manifest.json") if p.parent.name == job_id]
    assert len(stored) == 1 and stored[0].parent.parent != server.results_dir  # an owner space
    done = _prune(server, prefect_server.api_url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("pruned 1 finished job(s)")
    assert not stored[0].parent.exists()
    answer = server.client.get(f"/jobs/{job_id}", params={"f": "json"}, headers=as_user)
    assert answer.status_code == 404
