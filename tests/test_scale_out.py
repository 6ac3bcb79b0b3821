"""Scale-out: Prefect on PostgreSQL, two pygeoapi instances and two workers on loopback.

One burst of submissions, alternating between the two instances, feeds all
three tests: most jobs run locally in the instance that took them, every
fifth runs on the workers (``sleep`` 0.5 s: with the warm start and
Prefect's bookkeeping a run takes longer than the workers' 1 s poll, so a
worker at its ``--limit`` leaves the next runs to the other).
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest
from scale_out import WORKERS, ScaleOut

logger = logging.getLogger(__name__)

# The first test also starts PostgreSQL, Prefect, two workers and two pygeoapi:
# over the default 180 s when the machine's two cores are busy with more.
pytestmark = pytest.mark.timeout(420)

FINISHED = ("successful", "failed", "dismissed")
JOBS = 40
CLIENTS = 16


@dataclass
class Burst:
    """What the burst sent, got and left in the logs."""

    responses: list[httpx.Response]
    local: list[str]
    deployed: list[str]
    statuses: dict[str, str]
    logs: dict[str, str]


def is_deployed(index: int) -> bool:
    return index % 5 == 4


def wait_all(client: httpx.Client, job_ids: list[str], timeout: float) -> dict[str, str]:
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


@pytest.fixture(scope="module")
def burst(scale_out: ScaleOut) -> Burst:
    instances = scale_out.instances
    logs = [scale_out.prefect.log_file, *(server.log_path for server in instances)]
    log_starts = [log.stat().st_size for log in logs]

    def submit(index: int) -> httpx.Response:
        server = instances[index % 2]
        if is_deployed(index):
            return server.execute("sleep", {"seconds": 0.5}, asynchronous=True)
        return server.execute("hello-world", {"name": f"burst {index}"}, asynchronous=True)

    with ThreadPoolExecutor(CLIENTS) as pool:
        responses = list(pool.map(submit, range(JOBS)))
    ids = [r.json().get("jobID") if r.status_code == 201 else None for r in responses]
    job_ids = [job_id for job_id in ids if job_id]
    # Waiting on the other instance than the one that took most of them.
    statuses = wait_all(instances[1].client, job_ids, timeout=120)
    written = {
        str(log): log.read_bytes()[start:].decode(errors="replace")
        for log, start in zip(logs, log_starts, strict=True)
    }
    return Burst(
        responses=responses,
        local=[job_id for index, job_id in enumerate(ids) if job_id and not is_deployed(index)],
        deployed=[job_id for index, job_id in enumerate(ids) if job_id and is_deployed(index)],
        statuses=statuses,
        logs=written,
    )


def test_a_burst_on_both_instances_has_no_errors(burst: Burst) -> None:
    codes = Counter(response.status_code for response in burst.responses)
    assert codes == {201: JOBS}, codes
    assert len(set(burst.statuses)) == JOBS
    assert Counter(burst.statuses.values()) == {"successful": JOBS}
    for name, written in burst.logs.items():
        assert "database is locked" not in written, name
        # pygeoapi's access log: no request of the burst answered 5xx.
        assert not re.search(r'" 5\d\d -', written), name


def test_a_job_is_the_same_from_either_instance(scale_out: ScaleOut, burst: Burst) -> None:
    first, second = scale_out.instances
    # Local jobs ran in the instance that took them, deployed ones on a worker:
    # job 0 (local) was submitted to the first instance, job 9 (deployed) to the second.
    local, deployed = burst.local[0], burst.deployed[1]
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
    hello = second.client.get(f"/jobs/{local}/results", params={"f": "json"})
    assert hello.json() == {"id": "echo", "value": "Hello burst 0!"}

    every_job = set(burst.statuses)
    for server in (first, second):
        listed = server.client.get("/jobs", params={"f": "json", "limit": 200}).json()
        assert every_job <= {job["jobID"] for job in listed["jobs"]}

    # Dismissed on one instance: gone from both.
    assert second.client.delete(f"/jobs/{local}").status_code == 200
    assert first.job(local).status_code == 404


def test_work_spreads_over_both_workers(scale_out: ScaleOut, burst: Burst) -> None:
    deadline = time.monotonic() + 30
    while set(taken := scale_out.worker_of(burst.deployed)) != set(burst.deployed):
        assert time.monotonic() < deadline, f"runs without a worker event: {taken}"
        time.sleep(0.5)
    assert all(len(names) == 1 for names in taken.values()), taken
    per_worker = Counter(names[0] for names in taken.values())
    logger.info("runs per worker: %s", dict(per_worker))
    assert set(per_worker) == set(WORKERS), per_worker
