"""A load driver for a running pygeoapi: bursts of concurrent async submissions.

Reusable against any deployment (SQLite or PostgreSQL behind Prefect)::

    from load import submit_burst, wait_all_finished
    answers = collections.Counter()
    job_ids = submit_burst("http://127.0.0.1:5000", 500, 25, answers=answers)
    statuses = wait_all_finished("http://127.0.0.1:5000", job_ids, timeout=600)
"""

from __future__ import annotations

import collections
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

__all__ = ["BurstError", "submit_burst", "wait_all_finished"]

FINISHED = ("successful", "failed", "dismissed")


class BurstError(AssertionError):
    """A submission got an answer that is never acceptable (a 500, or no OGC document)."""


def submit_burst(
    base_url: str,
    n: int,
    clients: int,
    *,
    process_id: str = "hello-world",
    inputs: dict[str, Any] | None = None,
    answers: collections.Counter[int] | None = None,
    timeout: float = 60.0,
    retries_of_503: int = 5,
) -> list[str]:
    """Send ``n`` async execute requests from ``clients`` threads at once.

    Returns the job ids of the 201 answers. Every answer's status code is
    counted in ``answers``; a 5xx other than 503, or an error answer that is
    not an OGC exception document, raises :class:`BurstError` at the end. A
    503 ("too busy, try again later") is sent again after 1 s, up to
    ``retries_of_503`` times, as a well-behaved client would.
    """
    answers = answers if answers is not None else collections.Counter()
    inputs = inputs if inputs is not None else {"name": "load"}
    job_ids: list[str] = []
    problems: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(clients)

    def client(count: int) -> None:
        with httpx.Client(base_url=base_url, timeout=timeout) as http:
            start.wait()
            for _ in range(count):
                for attempt in range(retries_of_503 + 1):
                    if attempt:
                        time.sleep(1.0)
                    response = http.post(
                        f"/processes/{process_id}/execution",
                        json={"inputs": inputs},
                        headers={"Prefer": "respond-async"},
                    )
                    if response.status_code != 503 or attempt == retries_of_503:
                        break
                    with lock:
                        answers[503] += 1
                with lock:
                    answers[response.status_code] += 1
                    if response.status_code == 201:
                        job_ids.append(response.json()["jobID"])
                        continue
                    if response.status_code >= 500 and response.status_code != 503:
                        problems.append(f"{response.status_code}: {response.text[:300]}")
                    elif "application/json" not in response.headers.get("content-type", ""):
                        problems.append(f"{response.status_code} not JSON: {response.text[:300]}")

    shares = [n // clients + (1 if i < n % clients else 0) for i in range(clients)]
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client, share) for share in shares]:
            future.result()
    if problems:
        raise BurstError(f"{len(problems)} bad answers, e.g. {problems[:3]}")
    return job_ids


def wait_all_finished(
    base_url: str, job_ids: list[str], *, timeout: float = 600.0, clients: int = 4
) -> dict[str, dict[str, Any]]:
    """Poll every job until it is finished; returns its last status document by id.

    Raises AssertionError naming the unfinished jobs after ``timeout`` s.
    """
    documents: dict[str, dict[str, Any]] = {}
    waiting = list(job_ids)
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=base_url, timeout=30) as http, ThreadPoolExecutor(clients) as pool:

        def read(job_id: str) -> tuple[str, dict[str, Any]]:
            response = http.get(f"/jobs/{job_id}", params={"f": "json"})
            if response.status_code != 200:
                return job_id, {"status": f"HTTP {response.status_code}"}
            document: dict[str, Any] = response.json()
            return job_id, document

        while waiting:
            for job_id, document in pool.map(read, waiting):
                documents[job_id] = document
            waiting = [j for j in waiting if documents[j].get("status") not in FINISHED]
            if not waiting:
                break
            if time.monotonic() > deadline:
                counts = collections.Counter(documents[j].get("status") for j in waiting)
                raise AssertionError(
                    f"{len(waiting)} jobs unfinished after {timeout:g} s: {dict(counts)}"
                )
            time.sleep(1.0)
    return documents
