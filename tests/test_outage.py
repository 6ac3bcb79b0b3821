"""The Prefect server down for 30 s, then back (docs/reliability.md, part 3).

On gunicorn with the Flask app and on uvicorn with the Starlette app, two
workers each (tests/servers.py): every request during the outage answers an
OGC 503, and no job accepted before it is lost.
"""

from __future__ import annotations

import logging
import signal
import time

import httpx
import pytest
from faults import FINISHED, until
from servers import start_server

from pygeoapi_prefect.prefect.server import PrefectServer, free_port

logger = logging.getLogger(__name__)

OUTAGE_SECONDS = 30


def _ogc_503(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    document = response.json()
    assert document["code"] and document["description"], document


def _finished(server, job_ids):
    documents = {job_id: server.job(job_id).json() for job_id in job_ids}
    return documents if all(d["status"] in FINISHED for d in documents.values()) else None


@pytest.mark.parametrize("kind", ["gunicorn", "uvicorn"])
def test_prefect_outage_answers_503_and_loses_no_job(tmp_path_factory, kind):
    home = tmp_path_factory.mktemp("outage-prefect")
    prefect = PrefectServer(home, port=free_port())
    prefect.start(timeout=180)
    server = start_server(
        kind,
        tmp_path_factory.mktemp(f"outage-{kind}"),
        prefect.api_url,
        manager={"local": {"max_workers": 1}},
    )
    # Any request that hangs longer than 10 s fails the test (ReadTimeout).
    client = httpx.Client(base_url=server.base_url, timeout=10)
    try:
        earlier = server.execute("hello-world", {"name": "before"}, asynchronous=True)
        earlier_id = earlier.json()["jobID"]
        server.wait_for(earlier_id, "successful")
        accepted = []
        for _ in range(3):
            response = server.execute("sleep", {"seconds": 2}, asynchronous=True)
            assert response.status_code == 201, response.text
            accepted.append(response.json()["jobID"])
        server.wait_for(accepted[0], "running")

        prefect.stop()
        down_until = time.monotonic() + OUTAGE_SECONDS
        answered = 0
        while time.monotonic() < down_until:
            _ogc_503(client.get(f"/jobs/{accepted[1]}", params={"f": "json"}))
            _ogc_503(client.get("/jobs", params={"f": "json"}))
            _ogc_503(
                client.post(
                    "/processes/hello-world/execution",
                    json={"inputs": {"name": "during"}},
                    headers={"Prefer": "respond-async"},
                )
            )
            answered += 3
            time.sleep(0.5)
        logger.info("%d requests answered 503 during the outage", answered)

        prefect.start(timeout=180)
        until(
            lambda: client.get("/jobs", params={"f": "json"}).status_code == 200,
            60,
            "pygeoapi answers again without a restart",
        )
        documents = until(
            lambda: _finished(server, accepted), 120, "the jobs accepted before the outage ended"
        )
        assert [documents[j]["status"] for j in accepted] == ["successful"] * 3, documents
        after = client.post(
            "/processes/hello-world/execution",
            json={"inputs": {"name": "after"}},
            headers={"Prefer": "respond-async"},
        )
        assert after.status_code == 201, after.text
        server.wait_for(after.json()["jobID"], "successful")
        results = client.get(f"/jobs/{earlier_id}/results", params={"f": "json"})
        assert results.status_code == 200
    finally:
        client.close()
        server.stop()
        prefect.stop()


@pytest.mark.parametrize("kind", ["gunicorn", "uvicorn"])
def test_a_server_stopped_during_an_outage_stops_within_its_drain(tmp_path_factory, kind):
    # Each worker has sync records deferred (Prefect is out of reach). On
    # SIGTERM they are retried for server.manager.drain_seconds, given up with an
    # ERROR, and every worker exits by itself: none is killed by its server.
    server = start_server(
        kind,
        tmp_path_factory.mktemp(f"stop-{kind}"),
        f"http://127.0.0.1:{free_port()}/api",
        manager={"drain_seconds": 1},
    )
    try:
        for n in range(6):
            response = server.execute("hello-world", {"name": str(n)})
            assert response.status_code == 200, response.text
        until(lambda: "record deferred" in server.log_path.read_text(), 10, "a deferred record")
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(30) == 0
        elapsed = time.monotonic() - started
    finally:
        server.stop()
    log = server.log_path.read_text()
    logger.info("%s stopped in %.1f s", kind, elapsed)
    assert "not retried: this process is stopping (server.manager.drain_seconds)" in log
    assert "could not be recorded" in log
    assert "SIGKILL" not in log and "WORKER TIMEOUT" not in log
