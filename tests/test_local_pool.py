"""The local pool on its own (real processes): stops, concurrency, limits, dismiss."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from pathlib import Path

import pytest

from pygeoapi_prefect.execution import relay
from pygeoapi_prefect.execution.execute import JobRequest, Outcome
from pygeoapi_prefect.execution.local import JobHooks, LocalRunner
from pygeoapi_prefect.jobs.results import ResultStore

HELLO = {"type": "process", "processor": {"name": "HelloWorld"}}


class Calls:
    def __init__(self) -> None:
        self.started: list[str] = []
        self.finished: list[tuple[str, Outcome]] = []
        self.lock = threading.Lock()

    def hooks(self) -> JobHooks:
        def started(request: JobRequest) -> bool:
            with self.lock:
                self.started.append(request.job_id)
            return True

        def finished(request: JobRequest, outcome: Outcome) -> None:
            with self.lock:
                self.finished.append((request.job_id, outcome))

        return JobHooks(
            started=started,
            finished=finished,
            cancelled_elsewhere=lambda request: False,
            killed=lambda request: None,
        )


def test_a_job_whose_process_was_still_starting_is_left_for_others(tmp_path):
    # The pool stops while its template process still imports pygeoapi: the job
    # was taken off the queue but never claimed, so nothing is recorded for it
    # (it stays Pending in Prefect, and another process takes it over).
    calls = Calls()
    runner = LocalRunner(ResultStore(tmp_path.as_uri()), calls.hooks(), max_workers=1)
    runner.submit(JobRequest("00000000-0000-4000-8000-000000000001", "hello-world", HELLO, {}))
    runner.shutdown(grace=0)
    runner.join(10)
    assert calls.started == [] and calls.finished == []


def test_a_running_job_finishes_within_the_grace(tmp_path):
    calls = Calls()
    runner = LocalRunner(ResultStore(tmp_path.as_uri()), calls.hooks(), max_workers=1)
    runner.wait_ready()
    job_id = "00000000-0000-4000-8000-000000000002"
    runner.submit(JobRequest(job_id, "hello-world", HELLO, {"name": "grace"}))
    for _ in range(200):
        if calls.started:
            break
        threading.Event().wait(0.05)
    runner.shutdown(grace=30)
    assert calls.started == [job_id]
    assert [(j, o.ok) for j, o in calls.finished] == [(job_id, True)]


def test_a_job_is_queued_once_however_often_it_is_submitted(tmp_path):
    # Recovery may find a job it already holds (taken off the queue a moment ago).
    calls = Calls()
    runner = LocalRunner(ResultStore(tmp_path.as_uri()), calls.hooks(), max_workers=1)
    request = JobRequest("00000000-0000-4000-8000-000000000003", "hello-world", HELLO, {})
    try:
        assert runner.submit(request)
        assert runner.holds(request.job_id)
        assert not runner.submit(request)
        # Let go of once its end is recorded (a moment after the hook returns).
        for _ in range(400):
            if calls.finished and not runner.holds(request.job_id):
                break
            threading.Event().wait(0.05)
        assert not runner.holds(request.job_id)
        assert calls.started == [request.job_id]
    finally:
        runner.shutdown()


GATHER = {"type": "process", "processor": {"name": "pygeoapi_test_processes.GatherProcessor"}}


def _until(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _job(index: int, process_id: str, conf: dict, **inputs: object) -> JobRequest:
    return JobRequest(f"00000000-0000-4000-8000-{index:012d}", process_id, conf, inputs)


def test_jobs_run_at_once_each_in_a_process_forked_from_the_template(tmp_path):
    # Eight jobs that each wait until all eight have started: they can only
    # all end with every start before the first end if they ran together.
    calls = Calls()
    log = tmp_path / "log"
    runner = LocalRunner(
        ResultStore(tmp_path.as_uri()),
        calls.hooks(),
        max_workers=8,
        process_confs={"gather": GATHER},
    )
    try:
        for index in range(8):
            runner.submit(_job(index, "gather", GATHER, log=str(log), count=8, seconds=120))
        _until(lambda: len(calls.finished) == 8, "eight jobs", 180)
        lines = log.read_text().splitlines()
        first_end = next(i for i, line in enumerate(lines) if line.startswith("end"))
        assert sum(line.startswith("start") for line in lines[:first_end]) == 8
        assert all(outcome.ok for _, outcome in calls.finished)
        pids = {int(line.split()[1]) for line in lines if line.startswith("start")}
        assert len(pids) == 8  # a process of its own per job
        template = runner.template.process.pid
        assert os.getpid() not in pids and template not in pids
    finally:
        runner.shutdown()


def test_a_process_limit_runs_its_jobs_one_after_the_other(tmp_path):
    calls = Calls()
    log = tmp_path / "log"
    runner = LocalRunner(
        ResultStore(tmp_path.as_uri()),
        calls.hooks(),
        max_workers=8,
        process_limits={"gather": 1},
    )
    try:
        for index in range(3):
            # count=99 is never reached: each job waits its 0.3 s, then ends.
            runner.submit(_job(index, "gather", GATHER, log=str(log), count=99, seconds=0.3))
        runner.submit(_job(9, "hello-world", HELLO, name="not held back"))
        _until(lambda: len(calls.finished) == 4, "four jobs", 180)
        kinds = [line.split()[0] for line in log.read_text().splitlines()]
        assert kinds == ["start", "end"] * 3
        assert all(outcome.ok for _, outcome in calls.finished)
    finally:
        runner.shutdown()


def test_dismiss_kills_the_job_and_what_it_started_and_the_pool_shrinks(tmp_path):
    calls = Calls()
    killed: list[str] = []
    hooks = calls.hooks()
    hooks = JobHooks(
        started=hooks.started,
        finished=hooks.finished,
        cancelled_elsewhere=hooks.cancelled_elsewhere,
        killed=lambda request: killed.append(request.job_id),
    )
    log = tmp_path / "log"
    runner = LocalRunner(ResultStore(tmp_path.as_uri()), hooks, max_workers=4, idle_seconds=0.5)
    try:
        request = _job(1, "gather", GATHER, log=str(log), count=99, seconds=600, child=True)
        runner.submit(request)
        _until(lambda: log.exists() and "start" in log.read_text(), "the job to start")
        notes = dict(line.split() for line in log.read_text().splitlines())
        job_pid, child_pid = int(notes["start"]), int(notes["child"])
        assert _alive(job_pid) and _alive(child_pid)
        assert runner.dismiss(request.job_id)
        # dismiss returns once the job's process group is gone.
        assert not _alive(job_pid) and not _alive(child_pid)
        _until(lambda: killed == [request.job_id], "the killed hook")
        assert calls.finished == []
        assert not runner.holds(request.job_id)
        # Idle: the driving threads end; the template stays, with no children.
        _until(lambda: runner.slots == [], "the pool to shrink")
        assert runner.template.process.is_alive()
    finally:
        runner.shutdown()


def test_jobs_forked_from_the_template_write_to_s3(s3):
    # s3fs refuses use in a process forked after it was opened ("not
    # fork-safe"): the template opened the store, each job reopens it.
    calls = Calls()
    store = ResultStore(f"s3://{s3.bucket}/forked", s3.storage_options)
    runner = LocalRunner(store, calls.hooks(), max_workers=2)
    jobs = [f"00000000-0000-4000-8000-0000000000{n}" for n in (41, 42)]
    try:
        for job_id in jobs:
            runner.submit(JobRequest(job_id, "hello-world", HELLO, {"name": "fork"}))
        for _ in range(600):
            if len(calls.finished) == len(jobs):
                break
            threading.Event().wait(0.05)
    finally:
        runner.shutdown(grace=0)
    assert sorted((j, o.message) for j, o in calls.finished) == [(j, "") for j in jobs]
    assert all(o.ok for _, o in calls.finished)
    for job_id in jobs:
        _, output = store.read(job_id)
        assert output == {"id": "echo", "value": "Hello fork!"}


CLIENTS = {"type": "process", "processor": {"name": "pygeoapi_test_processes.ClientsProcessor"}}


@pytest.mark.parametrize("relayed", [False, True], ids=["own client", "relayed"])
def test_a_job_process_talks_to_prefect_through_one_client_or_none(
    relayed, tmp_path, prefect_server, prefect_api
):
    # Heartbeats, progress and log shipping of a job share one HTTP client
    # (one connection pool, one TLS context): each of its own cost a job
    # process a few MiB (benchmarks/job_memory.py). With the pool's
    # ``reported`` hook (the engine's), the job's process has no client at
    # all: its pool thread sends them (relay.py). The job's process counts
    # the clients alive in it once all three have spoken to the real server.
    from pygeoapi_prefect.jobs.runs import PROGRESS_LABEL
    from pygeoapi_prefect.prefect.states import state

    run = prefect_api.create_flow_run(
        flow_name="one-client-test", state=state("RUNNING"), tags=["one-client-test"]
    )
    calls = Calls()
    hooks = calls.hooks()
    served: list[str] = []
    if relayed:

        def reported(request: JobRequest, message: tuple) -> None:
            served.append(f"{message[1]} {message[2]}")
            relay.serve(prefect_api, request.job_id, message)

        hooks = dataclasses.replace(hooks, reported=reported)
    note = tmp_path / "clients.json"
    runner = LocalRunner(
        ResultStore(tmp_path.as_uri()),
        hooks,
        max_workers=1,
        api_url=prefect_server.api_url,
        heartbeat_seconds=0.2,
        process_confs={"clients": CLIENTS},
    )
    try:
        runner.submit(JobRequest(run["id"], "clients", CLIENTS, {"note": str(note)}))
        # Let go of once its end is recorded (a moment after the hook returns).
        _until(lambda: calls.finished and not runner.holds(run["id"]), "the job", 120)
    finally:
        runner.shutdown()
    assert [outcome.ok for _, outcome in calls.finished] == [True]
    counted = json.loads(note.read_text())
    assert counted["pid"] not in (os.getpid(), None)
    assert (counted["clients"], counted["pools"]) == ((0, 0) if relayed else (1, 1))
    if relayed:
        # Each kind of report went through the pool.
        kinds = {f"PATCH /flow_runs/{run['id']}/labels", "POST /events", "POST /logs/"}
        assert kinds <= set(served)
    # All three went through it: the progress label and the log line are in Prefect.
    assert prefect_api.read_flow_run(run["id"])["labels"][PROGRESS_LABEL] == 10
    logs = prefect_api.read_logs(run["id"], limit=50, offset=0)
    assert any(line["message"] == "a line for the job's log" for line in logs)

    def beats() -> list[dict]:
        # Prefect stores events a moment after it took them.
        found = prefect_api.request(
            "POST",
            "/events/filter",
            json={
                "filter": {
                    "event": {"name": ["pygeoapi.job.heartbeat"]},
                    "resource": {"id": [f"prefect.flow-run.{run['id']}"]},
                },
                "limit": 5,
            },
        ).json()
        return list(found["events"])

    _until(beats, "the job's heartbeats in Prefect", 60)
