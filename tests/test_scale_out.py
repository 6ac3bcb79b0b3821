"""Scale-out: Prefect on PostgreSQL, two pygeoapi instances and two workers on loopback."""

from __future__ import annotations

import itertools
import logging
import re
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
from scale_out import WORKERS, ScaleOut

logger = logging.getLogger(__name__)

FINISHED = ("successful", "failed", "dismissed")


def job_id_of(response: httpx.Response) -> str:
    assert response.status_code == 201, response.text
    return str(response.json()["jobID"])


def wait_all(client: httpx.Client, job_ids: list[str], timeout: float = 60) -> dict[str, str]:
    """Poll each job until finished; returns their statuses."""
    statuses: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    for job_id in job_ids:
        while True:
            status = client.get(f"/jobs/{job_id}", params={"f": "json"}).json()["status"]
            if status in FINISHED:
                statuses[job_id] = status
                break
            assert time.monotonic() < deadline, f"job {job_id} still {status}"
            time.sleep(0.1)
    return statuses


def test_a_job_is_the_same_from_either_instance(scale_out: ScaleOut) -> None:
    first, second = scale_out.instances
    local = job_id_of(first.execute("hello-world", {"name": "first"}, asynchronous=True))
    deployed = job_id_of(second.execute("sleep", {"seconds": 0.2}, asynchronous=True))
    second.wait_for(local, "successful")
    first.wait_for(deployed, "successful", timeout=60)

    for job_id in (local, deployed):
        documents = [server.job(job_id).json() for server in (first, second)]
        # The same job; only its links name the instance that answered.
        assert documents[0].pop("links")[0]["href"].startswith(first.base_url)
        assert documents[1].pop("links")[0]["href"].startswith(second.base_url)
        assert documents[0] == documents[1]
        assert documents[0]["status"] == "successful"
        results = [
            server.client.get(f"/jobs/{job_id}/results", params={"f": "json"}).json()
            for server in (first, second)
        ]
        assert results[0] == results[1]
    assert results[0]["id"] == "result"
    assert results[0]["value"]["beats"] >= 1
    local_results = second.client.get(f"/jobs/{local}/results", params={"f": "json"})
    assert local_results.json() == {"id": "echo", "value": "Hello first!"}

    for server in (first, second):
        listed = server.client.get("/jobs", params={"f": "json", "limit": 50}).json()
        assert {local, deployed} <= {job["jobID"] for job in listed["jobs"]}

    # Dismissed on one instance: gone from both.
    assert first.client.delete(f"/jobs/{local}").status_code == 200
    assert second.job(local).status_code == 404


def test_work_spreads_over_both_workers(scale_out: ScaleOut) -> None:
    first, second = scale_out.instances
    # Each worker takes at most WORKER_LIMIT runs at once; 1.5 s runs leave
    # the rest scheduled for the other worker's next poll.
    submit = itertools.cycle((first, second))
    job_ids = [
        job_id_of(next(submit).execute("sleep", {"seconds": 1.5}, asynchronous=True))
        for _ in range(6)
    ]
    statuses = wait_all(second.client, job_ids, timeout=90)
    assert set(statuses.values()) == {"successful"}, statuses

    deadline = time.monotonic() + 30
    while set(taken := scale_out.worker_of(job_ids)) != set(job_ids):
        assert time.monotonic() < deadline, f"runs without a worker event: {taken}"
        time.sleep(0.5)
    assert all(len(names) == 1 for names in taken.values()), taken
    per_worker = Counter(names[0] for names in taken.values())
    logger.info("runs per worker: %s", dict(per_worker))
    assert set(per_worker) == set(WORKERS), per_worker


def test_a_burst_on_both_instances_has_no_errors(scale_out: ScaleOut) -> None:
    instances = scale_out.instances
    logs = [scale_out.prefect.log_file, *(server.log_path for server in instances)]
    log_starts = [log.stat().st_size for log in logs]

    def submit(index: int) -> httpx.Response:
        server = instances[index % 2]
        if index % 10 == 9:
            return server.execute("sleep", {"seconds": 0.1}, asynchronous=True)
        return server.execute("hello-world", {"name": f"burst {index}"}, asynchronous=True)

    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(submit, range(60)))
    codes = Counter(response.status_code for response in responses)
    assert codes == {201: 60}, codes
    job_ids = [response.json()["jobID"] for response in responses]
    assert len(set(job_ids)) == 60

    statuses = wait_all(instances[0].client, job_ids, timeout=90)
    assert Counter(statuses.values()) == {"successful": 60}
    for server in instances:
        listed = server.client.get("/jobs", params={"f": "json", "limit": 200}).json()
        assert set(job_ids) <= {job["jobID"] for job in listed["jobs"]}

    for log, log_start in zip(logs, log_starts, strict=True):
        written = log.read_bytes()[log_start:].decode(errors="replace")
        assert "database is locked" not in written, log
        # pygeoapi's access log: no request of the burst answered 5xx.
        assert not re.search(r'" 5\d\d -', written), log
