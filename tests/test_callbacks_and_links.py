"""OGC subscriber callbacks, and the links of execution and status documents."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from ogc import validate

from pygeoapi_prefect.execution.callbacks import CallbackPolicy


class Receiver:
    """An HTTP server on loopback that records the callbacks it gets."""

    def __init__(self, failures: int = 0) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.failures = failures
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.calls.append((self.path, body))
                failing = receiver.failures > 0
                receiver.failures -= 1
                self.send_response(500 if failing else 204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, path: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for got, body in self.calls:
                if got == path:
                    return body
            time.sleep(0.05)
        raise AssertionError(f"no callback to {path}; got {[p for p, _ in self.calls]}")

    def subscriber(self) -> dict[str, str]:
        return {
            "successUri": f"{self.url}/success",
            "inProgressUri": f"{self.url}/in-progress",
            "failedUri": f"{self.url}/failed",
        }


@pytest.fixture(scope="module")
def allowing(prefect_server, tmp_path_factory):
    from conftest import start_pygeoapi

    server = start_pygeoapi(
        tmp_path_factory.mktemp("callbacks"),
        prefect_server.api_url,
        manager={"callbacks": {"allow": ["127.0.0.1/32"], "retries": 2}},
    )
    yield server
    server.stop()


def test_async_success_callbacks(allowing):
    receiver = Receiver()
    response = allowing.execute(
        "hello-world", {"name": "cb"}, asynchronous=True, subscriber=receiver.subscriber()
    )
    assert response.status_code == 201
    job_id = response.json()["jobID"]
    in_progress = receiver.wait_for("/in-progress")
    validate(in_progress, "statusInfo")
    assert in_progress["jobID"] == job_id
    assert in_progress["status"] == "running"
    success = receiver.wait_for("/success")
    validate(success, "results")
    assert success == {"echo": "Hello cb!"}


def test_async_failure_callback(allowing):
    receiver = Receiver()
    job_id = allowing.execute(
        "fail", {"what": "callbacks"}, asynchronous=True, subscriber=receiver.subscriber()
    ).json()["jobID"]
    failed = receiver.wait_for("/failed")
    validate(failed, "statusInfo")
    assert failed["jobID"] == job_id
    assert failed["status"] == "failed"
    assert "cannot handle callbacks" in failed["message"]


def test_sync_callbacks(allowing):
    receiver = Receiver()
    response = allowing.execute("hello-world", {"name": "sync"}, subscriber=receiver.subscriber())
    assert response.status_code == 200
    assert receiver.wait_for("/success") == {"echo": "Hello sync!"}
    receiver = Receiver()
    assert allowing.execute("fail", {}, subscriber=receiver.subscriber()).status_code == 500
    assert receiver.wait_for("/failed")["status"] == "failed"


def test_callbacks_are_retried_with_backoff(allowing):
    receiver = Receiver(failures=2)
    allowing.execute(
        "hello-world", {"name": "retry"}, subscriber={"successUri": f"{receiver.url}/success"}
    )
    deadline = time.monotonic() + 30
    while len(receiver.calls) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [path for path, _ in receiver.calls] == ["/success"] * 3


def test_internal_destinations_are_refused_by_default(pygeoapi, prefect_api):
    receiver = Receiver()
    before = prefect_api.count_flow_runs({"tags": {"all_": ["pygeoapi.process:hello-world"]}})
    response = pygeoapi.execute(
        "hello-world", {"name": "x"}, asynchronous=True, subscriber=receiver.subscriber()
    )
    assert response.status_code == 400
    validate(response.json(), "exception")
    assert "server.manager.callbacks.allow" in response.json()["description"]
    after = prefect_api.count_flow_runs({"tags": {"all_": ["pygeoapi.process:hello-world"]}})
    assert after == before
    assert receiver.calls == []


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://localhost/x",
        "http://10.1.2.3/x",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/x",
        "ftp://example.org/x",
        "file:///etc/passwd",
    ],
)
def test_policy_refuses_internal_and_non_http(url):
    assert CallbackPolicy().problem(url) is not None


def test_policy_allow_list():
    policy = CallbackPolicy(["10.0.0.0/8", "localhost"])
    assert policy.problem("http://10.1.2.3/x") is None
    assert policy.problem("http://localhost:8080/x") is None
    assert policy.problem("http://192.168.1.1/x") is not None


def test_sync_response_links_to_its_job(pygeoapi):
    response = pygeoapi.execute("hello-world", {"name": "links"})
    job_url = response.headers["Location"]
    links = response.headers.get_list("Link")
    assert any(f"<{job_url}>" in link and 'rel="monitor"' in link for link in links)
    assert any(f"<{job_url}/results>" in link and "ogc/1.0/results" in link for link in links)


def test_status_links(pygeoapi, prefect_server):
    job_id = pygeoapi.execute("hello-world", {"name": "links"}, asynchronous=True).json()["jobID"]
    document = pygeoapi.wait_for(job_id, "successful")
    validate(document, "statusInfo")
    assert document["type"] == "process"
    assert document["processID"] == "hello-world"
    rels = {link["rel"]: link for link in document["links"]}
    assert rels["self"]["href"].startswith(f"{pygeoapi.base_url}/jobs/{job_id}")
    assert rels["http://www.opengis.net/def/rel/ogc/1.0/results"]["href"].endswith(
        f"/jobs/{job_id}/results"
    )
    assert rels["related"]["href"] == f"{prefect_server.ui_url}/runs/flow-run/{job_id}"
    listed = pygeoapi.client.get("/jobs", params={"f": "json", "limit": 5}).json()
    assert all(any(link["rel"] == "related" for link in job["links"]) for job in listed["jobs"])
