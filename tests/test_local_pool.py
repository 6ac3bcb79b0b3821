"""The local pool on its own (real worker processes): what a stop does to a job."""

from __future__ import annotations

import threading

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
    # The pool stops while its worker process still imports pygeoapi: the job
    # was taken off the queue but never claimed, so nothing is recorded for it
    # (it stays Pending in Prefect, and another process takes it over).
    calls = Calls()
    runner = LocalRunner(ResultStore(tmp_path.as_uri()), calls.hooks(), max_workers=1)
    runner.submit(JobRequest("00000000-0000-4000-8000-000000000001", "hello-world", HELLO, {}))
    runner.shutdown(grace=0)
    runner.workers[0].thread.join(10)
    assert calls.started == [] and calls.finished == []


def test_a_running_job_finishes_within_the_grace(tmp_path):
    calls = Calls()
    runner = LocalRunner(ResultStore(tmp_path.as_uri()), calls.hooks(), max_workers=1)
    runner.workers[0].wait_ready()
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
        for _ in range(400):
            if calls.finished:
                break
            threading.Event().wait(0.05)
        assert not runner.holds(request.job_id)
        assert calls.started == [request.job_id]
    finally:
        runner.shutdown()
