"""Job logs (GET /jobs/{id}/logs, Prefect flow-run logs), failed results, run names and summaries.

Real parts: the session's Prefect server, pygeoapi over HTTP (gunicorn),
async jobs in the local pool's worker processes.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from ogc import validate

from pygeoapi_prefect.execution.joblogs import JobLog, LogLimits, capturing
from pygeoapi_prefect.jobs.runs import LOGS_REL
from pygeoapi_prefect.prefect.api import PrefectAPI

NO_SUCH_JOB = "http://www.opengis.net/def/exceptions/ogcapi-processes-1/1.0/no-such-job"
NOT_READY = "http://www.opengis.net/def/exceptions/ogcapi-processes-1/1.0/result-not-ready"


def _marker() -> str:
    return f"m{uuid.uuid4().hex[:10]}"


def _run_async(server: Any, inputs: dict[str, Any], *statuses: str) -> str:
    response = server.execute("chatty", inputs, asynchronous=True)
    assert response.status_code == 201, response.text
    job_id = response.headers["Location"].rstrip("/").split("/")[-1]
    server.wait_for(job_id, *(statuses or ("successful",)), timeout=90)
    return job_id


def _logs(server: Any, job_id: str, **params: Any) -> httpx.Response:
    return server.client.get(f"/jobs/{job_id}/logs", params=params)


def _messages(server: Any, job_id: str) -> list[str]:
    document = _logs(server, job_id, limit=1000).json()
    return [line["message"] for line in document["logs"]]


def _wait_logs(server: Any, job_id: str, needle: str, timeout: float = 60) -> list[str]:
    # A sync job's lines are sent just after its answer, off the request path.
    deadline = time.monotonic() + timeout
    while True:
        messages = _messages(server, job_id)
        if any(needle in m for m in messages):
            return messages
        if time.monotonic() > deadline:
            raise AssertionError(f"no {needle!r} in the log of job {job_id}: {messages}")
        time.sleep(0.2)


# -- logs of async jobs (local worker processes) ----------------------------------


def test_async_job_log_is_its_flow_runs_prefect_log(pygeoapi, prefect_api):
    marker = _marker()
    job_id = _run_async(pygeoapi, {"marker": marker, "lines": 3})
    response = _logs(pygeoapi, job_id, f="json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    document = response.json()
    assert document["jobID"] == job_id and document["status"] == "successful"
    lines = document["logs"]
    by_message = {line["message"]: line for line in lines}
    for number in range(3):
        assert by_message[f"{marker} line {number}"]["level"] == "INFO"
        assert by_message[f"{marker} line {number}"]["logger"] == "chatty.process"
    assert by_message[f"{marker} warning"]["level"] == "WARNING"
    assert by_message[f"{marker} printed to stdout"]["logger"] == "stdout"
    assert by_message[f"{marker} printed to stderr"]["level"] == "WARNING"
    assert not any("debug line" in line["message"] for line in lines)  # below logs.level
    assert all(line["timestamp"] for line in lines)
    # In order, as logged.
    ours = [line["message"] for line in lines if line["message"].startswith(marker)]
    assert ours[:4] == [f"{marker} line {n}" for n in range(3)] + [f"{marker} warning"]
    # They are the flow run's logs in Prefect (what its UI shows under the run).
    stored = prefect_api.read_logs(job_id, limit=200, offset=0)
    assert {f"{marker} line 0", f"{marker} printed to stdout"} <= {s["message"] for s in stored}
    assert {s["flow_run_id"] for s in stored} == {job_id}


def test_status_document_links_the_log(pygeoapi):
    job_id = _run_async(pygeoapi, {"marker": _marker(), "lines": 1})
    document = pygeoapi.job(job_id).json()
    validate(document, "statusInfo")
    link = next(link for link in document["links"] if link["rel"] == LOGS_REL)
    assert link["href"].endswith(f"/jobs/{job_id}/logs?f=json")
    assert httpx.get(link["href"], timeout=30).json()["jobID"] == job_id


def test_log_as_plain_text_by_f_and_by_accept(pygeoapi):
    marker = _marker()
    job_id = _run_async(pygeoapi, {"marker": marker, "lines": 2})
    for response in (
        _logs(pygeoapi, job_id, f="txt"),
        pygeoapi.client.get(f"/jobs/{job_id}/logs", headers={"Accept": "text/plain"}),
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        text = response.text
        assert f"INFO     chatty.process: {marker} line 1\n" in text
        assert f"stderr: {marker} printed to stderr" in text
    browser = pygeoapi.client.get(
        f"/jobs/{job_id}/logs", headers={"Accept": "text/html,application/xml;q=0.9,*/*;q=0.8"}
    )
    assert browser.headers["content-type"].startswith("application/json")


def test_log_pages_with_limit_offset_and_links(pygeoapi):
    marker = _marker()
    job_id = _run_async(pygeoapi, {"marker": marker, "lines": 25})
    everything = _messages(pygeoapi, job_id)
    first = _logs(pygeoapi, job_id, limit=10).json()
    assert first["numberReturned"] == 10
    assert [line["message"] for line in first["logs"]] == everything[:10]
    rels = {link["rel"]: link["href"] for link in first["links"]}
    assert "prev" not in rels and {"self", "next", "up", "alternate"} <= set(rels)
    second = httpx.get(rels["next"], timeout=30).json()
    assert [line["message"] for line in second["logs"]] == everything[10:20]
    assert {link["rel"] for link in second["links"]} >= {"next", "prev"}
    last = _logs(pygeoapi, job_id, limit=10, offset=20).json()
    assert [line["message"] for line in last["logs"]] == everything[20:]
    assert "next" not in {link["rel"] for link in last["links"]}
    text = _logs(pygeoapi, job_id, f="txt", limit=10)
    assert 'rel="next"' in text.headers["link"]
    assert len(text.text.splitlines()) == 10


@pytest.mark.parametrize(
    ("path", "status", "kind"),
    [
        ("/jobs/6b1f3c2e-0000-4000-8000-000000000000/logs", 404, NO_SUCH_JOB),
        ("/jobs/not-a-job/logs", 404, NO_SUCH_JOB),
        ("/jobs/{job}/logs?limit=0", 400, "InvalidParameterValue"),
        ("/jobs/{job}/logs?limit=x", 400, "InvalidParameterValue"),
        ("/jobs/{job}/logs?offset=-1", 400, "InvalidParameterValue"),
        ("/jobs/{job}/logs?f=xml", 400, "InvalidParameterValue"),
    ],
)
def test_log_of_unknown_job_or_bad_paging_is_an_ogc_exception(pygeoapi, path, status, kind):
    if "{job}" in path:
        job_id = _run_async(pygeoapi, {"marker": _marker(), "lines": 0})
        path = path.replace("{job}", job_id)
    response = pygeoapi.client.get(path)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    document = response.json()
    validate(document, "exception")
    assert document["type"] == kind
    assert "Traceback" not in response.text


def test_log_route_takes_get_only(pygeoapi):
    response = pygeoapi.client.post(f"/jobs/{uuid.uuid4()}/logs")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET"


def _kept_and_dropped(server: Any, job_id: str) -> tuple[list[dict[str, Any]], int, str]:
    # The job's own lines (not Prefect's about its run), and the count of the dropped line.
    lines = _logs(server, job_id, limit=1000).json()["logs"]
    ours = [line for line in lines if not line["logger"].startswith("prefect")]
    dropped = [line["message"] for line in ours if "were dropped" in line["message"]]
    assert len(dropped) == 1, [(line["timestamp"], line["message"]) for line in lines]
    assert ours[-1]["message"] == dropped[0]
    return ours[:-1], int(dropped[0].split()[0]), dropped[0]


def test_volume_limit_keeps_max_lines_and_counts_the_rest(pygeoapi_factory):
    server = pygeoapi_factory(manager={"logs": {"max_lines": 5}})
    marker = _marker()
    job_id = _run_async(server, {"marker": marker, "lines": 20})
    kept, dropped, message = _kept_and_dropped(server, job_id)
    assert len(kept) == 5
    ours = [line["message"] for line in kept if line["message"].startswith(marker)]
    assert ours == [f"{marker} line {n}" for n in range(len(ours))]
    # 20 INFO lines, a warning and two printed lines: 23, of which 5 kept, the
    # rest counted (more if the worker logged something else meanwhile).
    assert dropped >= 23 - len(ours)
    assert "server.manager.logs.max_lines" in message


def test_max_bytes_cuts_and_counts():
    log = JobLog(LogLimits(max_lines=100, max_bytes=1024), "job")
    log.add(logging.INFO, "x", "a" * 1000)
    log.add(logging.INFO, "x", "b" * 100)  # cut to the 24 bytes left
    log.add(logging.INFO, "x", "c")  # no room: counted
    log.close()
    lines = log.take()
    assert [len(line["message"]) for line in lines[:2]] == [1000, 24]
    assert log.dropped_lines == 1 and log.dropped_bytes == 76 + 1
    assert lines[-1]["message"].startswith("1 more log lines (77 bytes) were dropped")
    assert [line["flow_run_id"] for line in lines] == ["job"] * 3


def test_disabled_logs_capture_nothing(pygeoapi_factory):
    server = pygeoapi_factory(manager={"logs": {"enabled": False}})
    job_id = _run_async(server, {"marker": _marker(), "lines": 3})
    assert _messages(server, job_id) == []


# -- sync jobs (the request thread) -------------------------------------------------


def test_sync_job_log(pygeoapi):
    marker = _marker()
    response = pygeoapi.execute("chatty", {"marker": marker, "lines": 2})
    assert response.status_code == 200, response.text
    job_id = response.headers["Location"].rstrip("/").split("/")[-1]
    messages = _wait_logs(pygeoapi, job_id, f"{marker} printed to stderr")
    # The server logs at WARNING (example-config.yml): INFO records are never made there.
    assert f"{marker} warning" in messages
    assert f"{marker} printed to stdout" in messages
    assert not any(f"{marker} line" in m for m in messages)


def test_a_running_sync_jobs_lines_are_there_before_it_ends(pygeoapi, prefect_api):
    # Recorded after 0.25 s, then shipped every second while it runs.
    marker = _marker()
    tags = {"all_": ["pygeoapi", "pygeoapi.process:chatty"]}
    running = {"tags": tags, "state": {"type": {"any_": ["RUNNING"]}}}

    def runs() -> set[str]:
        found = prefect_api.filter_flow_runs(running, sort="ID_DESC", limit=200, offset=0)
        return {str(r["id"]) for r in found}

    before = runs()
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(pygeoapi.execute, "chatty", {"marker": marker, "seconds": 20})
        try:
            deadline = time.monotonic() + 15
            while not (new := runs() - before):
                assert time.monotonic() < deadline, "the sync job was not recorded"
                time.sleep(0.2)
            (job_id,) = new
            messages = _wait_logs(pygeoapi, job_id, f"{marker} printed to stderr", timeout=15)
            assert f"{marker} warning" in messages
            assert not answer.done()  # seen while the request still waits for the job
        finally:
            assert answer.result().status_code == 200


def test_concurrent_sync_jobs_keep_their_own_lines(pygeoapi):
    markers = [_marker() for _ in range(4)]
    job_ids: dict[str, str] = {}

    def run(marker: str) -> None:
        response = pygeoapi.execute("chatty", {"marker": marker, "lines": 0, "seconds": 0.3})
        assert response.status_code == 200
        job_ids[marker] = response.headers["Location"].rstrip("/").split("/")[-1]

    threads = [threading.Thread(target=run, args=(marker,)) for marker in markers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert set(job_ids) == set(markers)
    for marker, job_id in job_ids.items():
        messages = _wait_logs(pygeoapi, job_id, f"{marker} printed to stderr")
        assert sorted(messages) == sorted(
            [f"{marker} warning", f"{marker} printed to stdout", f"{marker} printed to stderr"]
        )


def test_thread_capture_ignores_other_threads():
    log = JobLog(LogLimits(level=logging.WARNING))
    other = threading.Event()
    noisy = logging.getLogger("another.request")

    def elsewhere() -> None:
        noisy.warning("not this job's")
        print("not this job's print")
        other.set()

    with capturing(log, this_thread_only=True):
        logging.getLogger("this.job").warning("this job's")
        thread = threading.Thread(target=elsewhere)
        thread.start()
        thread.join(10)
        print("this job's print")
    assert other.is_set()
    log.job_id = "job"
    assert [line["message"] for line in log.take()] == ["this job's", "this job's print"]


def test_a_whole_process_capture_leaves_the_hosts_handlers_at_their_level():
    # A job's process lets its root logger down to the job's level (INFO);
    # the handler the host put on the root (e.g. Prefect's console, when a
    # flow process made the template import Prefect) still shows only what
    # it showed before: WARNING and up, and what a logger with a level of its
    # own lets through.
    class Seen(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(record.getMessage())

    root = logging.getLogger()
    host = Seen()
    level = root.level
    chatty = logging.getLogger("tests.chatty")
    root.addHandler(host)
    root.setLevel(logging.WARNING)
    chatty.setLevel(logging.DEBUG)
    log = JobLog(LogLimits(level=logging.INFO))
    try:
        with capturing(log, this_thread_only=False):
            logging.getLogger("tests.job").info("info of the job")
            logging.getLogger("tests.job").warning("warning of the job")
            chatty.debug("debug of a logger set to DEBUG")
        logging.getLogger("tests.job").info("info after the job")
    finally:
        root.removeHandler(host)
        root.setLevel(level)
        chatty.setLevel(logging.NOTSET)
    assert host.messages == ["warning of the job", "debug of a logger set to DEBUG"]
    assert host.filters == []
    log.job_id = "job"
    assert [line["message"] for line in log.take()] == ["info of the job", "warning of the job"]


# -- failed jobs' results, and results that are not there (yet) -------------------


@pytest.mark.parametrize(
    ("fail", "status", "code"),
    [("500", 500, "NoApplicableCode"), ("400", 400, "InvalidParameterValue")],
)
def test_failed_async_job_results_answer_its_own_failure(pygeoapi, fail, status, code):
    marker = _marker()
    job_id = _run_async(pygeoapi, {"marker": marker, "fail": fail, "lines": 0}, "failed")
    job = pygeoapi.job(job_id).json()
    response = pygeoapi.client.get(f"/jobs/{job_id}/results", params={"f": "json"})
    assert response.status_code == status, response.text
    document = response.json()
    validate(document, "exception")
    assert document["type"] == code
    assert document["description"] == job["message"]
    assert marker in job["message"]
    # Also without f (Accept: */*).
    assert pygeoapi.client.get(f"/jobs/{job_id}/results").status_code == status
    # The traceback is in the job's log.
    assert any("Traceback" in m and marker in m for m in _messages(pygeoapi, job_id))


def test_failed_sync_job_results_answer_its_own_failure(pygeoapi):
    marker = _marker()
    response = pygeoapi.execute("chatty", {"marker": marker, "fail": "400", "lines": 0})
    assert response.status_code == 400
    job_id = response.headers["Location"].rstrip("/").split("/")[-1]
    results = pygeoapi.client.get(f"/jobs/{job_id}/results", params={"f": "json"})
    assert results.status_code == 400
    assert results.json()["type"] == "InvalidParameterValue"
    assert results.json()["description"] == pygeoapi.job(job_id).json()["message"]


def test_results_of_running_and_dismissed_jobs_are_not_ready(pygeoapi, prefect_api):
    job_id = _run_async(pygeoapi, {"marker": _marker(), "lines": 0, "seconds": 60}, "running")
    response = pygeoapi.client.get(f"/jobs/{job_id}/results", params={"f": "json"})
    assert response.status_code == 404
    validate(response.json(), "exception")
    assert response.json()["type"] == NOT_READY
    assert "running" in response.json()["description"]
    # Cancelled in Prefect (not through the API): still a job, dismissed.
    prefect_api.set_state(job_id, {"type": "CANCELLED", "message": "stopped in the UI"}, force=True)
    pygeoapi.wait_for(job_id, "dismissed")
    response = pygeoapi.client.get(f"/jobs/{job_id}/results", params={"f": "json"})
    assert response.status_code == 404
    assert response.json()["type"] == NOT_READY
    assert "dismissed" in response.json()["description"]


# -- the Prefect UI: run names and the summary artifact ------------------------------


def _wait_name(api: PrefectAPI, job_id: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    expected = f"chatty-{job_id[:8]}"
    while True:
        run = api.read_flow_run(job_id)
        assert run is not None
        if run["name"] == expected or time.monotonic() > deadline:
            return str(run["name"])
        time.sleep(0.1)


def _artifacts(api: PrefectAPI, job_id: str, timeout: float = 30) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        found: list[dict[str, Any]] = api.request(
            "POST", "/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [job_id]}}}
        ).json()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_async_and_sync_runs_are_named_and_summarised(pygeoapi, prefect_api):
    marker = _marker()
    async_id = _run_async(pygeoapi, {"marker": marker, "lines": 0})
    sync = pygeoapi.execute("chatty", {"marker": marker, "lines": 0})
    sync_id = sync.headers["Location"].rstrip("/").split("/")[-1]
    for job_id in (async_id, sync_id):
        assert _wait_name(prefect_api, job_id) == f"chatty-{job_id[:8]}"
        artifacts = _artifacts(prefect_api, job_id)
        assert len(artifacts) == 1
        markdown = artifacts[0]["data"]
        assert artifacts[0]["type"] == "markdown"
        assert job_id in markdown and "successful" in markdown and marker in markdown
        assert f"{pygeoapi.base_url}/jobs/{job_id}/results" in markdown
        assert f"{pygeoapi.base_url}/jobs/{job_id}/logs" in markdown
    # The job list names the same run.
    listed = pygeoapi.client.get("/jobs", params={"limit": 50}).json()["jobs"]
    assert async_id in {job["jobID"] for job in listed}


def test_ui_extras_can_be_switched_off(pygeoapi_factory, prefect_api):
    server = pygeoapi_factory(
        manager={"prefect_ui": {"run_names": False, "summary_artifact": False}}
    )
    job_id = _run_async(server, {"marker": _marker(), "lines": 0})
    time.sleep(1.0)  # what would have been written in the background has been by now
    run = prefect_api.read_flow_run(job_id)
    assert run is not None and run["name"] != f"chatty-{job_id[:8]}"
    assert _artifacts(prefect_api, job_id, timeout=0) == []


def test_a_taken_over_job_is_named_logged_and_summarised(pygeoapi_factory, prefect_api):
    # A queued job whose accepting process died before it ran (and before it
    # was named): another instance takes it over and runs it.
    from pygeoapi_prefect.execution.leases import HOLDER_LABEL
    from pygeoapi_prefect.jobs.runs import job_tags

    marker = _marker()
    run = prefect_api.create_flow_run(
        flow_name="chatty",
        state={"type": "PENDING", "name": "Pending", "message": "Job accepted and waiting to run"},
        tags=job_tags("chatty"),
        labels={HOLDER_LABEL: f"dead-{uuid.uuid4().hex[:8]}"},
        parameters={
            "inputs": {"marker": marker, "lines": 1},
            "outputs": None,
            "response": "raw",
            "subscriber": None,
        },
    )
    job_id = str(run["id"])
    assert run["name"] != f"chatty-{job_id[:8]}"
    server = pygeoapi_factory(
        manager={
            "recovery": {"lease_seconds": 4, "scan_seconds": 1},
            "heartbeat": {"install_automation": False},
        }
    )
    server.wait_for(job_id, "successful", timeout=120)
    assert f"{marker} line 0" in _messages(server, job_id)
    assert _wait_name(prefect_api, job_id) == f"chatty-{job_id[:8]}"
    assert marker in _artifacts(prefect_api, job_id)[0]["data"]
