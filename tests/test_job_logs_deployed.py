"""Job logs, names and summaries of deployed jobs, run by a real `prefect worker` process."""

from __future__ import annotations

import uuid

import pytest
from conftest import STANDARD_PROCESSES
from test_job_logs import _artifacts, _kept_and_dropped, _messages, _wait_logs, _wait_name
from workers import deployed_pygeoapi

POOL = "pygeoapi-logs-pool"
DEPLOYED = {
    "chatty": STANDARD_PROCESSES["chatty"],
    "hi-prefect-world": STANDARD_PROCESSES["hi-prefect-world"],
}
MANAGER = {"logs": {"max_lines": 8}}
#: A worker starts a new Python process per run: slow on a busy machine.
pytestmark = pytest.mark.timeout(420)


@pytest.fixture(scope="module")
def deployed(prefect_server, tmp_path_factory):
    """A work pool, a worker, chatty and hi-prefect-world deployed, pygeoapi using them."""
    with deployed_pygeoapi(
        prefect_server,
        tmp_path_factory,
        pool=POOL,
        name="logs",
        processes=DEPLOYED,
        manager=MANAGER,
    ) as server:
        yield server


def _submit(server, process_id, inputs):
    response = server.execute(process_id, inputs, asynchronous=True)
    assert response.status_code == 201, response.text
    return response.json()["jobID"]


def test_deployed_job_logs_name_and_summary(deployed, prefect_api):
    marker = f"m{uuid.uuid4().hex[:10]}"
    job_id = _submit(deployed, "chatty", {"marker": marker, "lines": 2})
    deployed.wait_for(job_id, "successful", timeout=300)
    messages = _messages(deployed, job_id)  # ours: all in before the job is successful
    for expected in (
        f"{marker} line 0",
        f"{marker} line 1",
        f"{marker} warning",
        f"{marker} printed to stdout",
        f"{marker} printed to stderr",
    ):
        assert expected in messages
    # Prefect's engine logs about the run are the job's log too (Prefect sends
    # them in its own batches, maybe after the run ended).
    _wait_logs(deployed, job_id, "Finished in state")
    assert _wait_name(prefect_api, job_id) == f"chatty-{job_id[:8]}"
    artifacts = _artifacts(prefect_api, job_id)
    assert len(artifacts) == 1 and marker in artifacts[0]["data"]
    assert f"{deployed.base_url}/jobs/{job_id}/logs" in artifacts[0]["data"]


def test_deployed_job_keeps_the_volume_limit(deployed):
    marker = f"m{uuid.uuid4().hex[:10]}"
    job_id = _submit(deployed, "chatty", {"marker": marker, "lines": 20})
    deployed.wait_for(job_id, "successful", timeout=300)
    kept, dropped, _ = _kept_and_dropped(deployed, job_id)
    assert len(kept) == 8
    ours = [line["message"] for line in kept if line["message"].startswith(marker)]
    assert ours == [f"{marker} line {n}" for n in range(len(ours))]
    assert dropped >= 23 - len(ours)


def test_deployed_failure_is_the_results_answer(deployed):
    marker = f"m{uuid.uuid4().hex[:10]}"
    job_id = _submit(deployed, "chatty", {"marker": marker, "lines": 0, "fail": "400"})
    job = deployed.wait_for(job_id, "failed", timeout=300)
    response = deployed.client.get(f"/jobs/{job_id}/results", params={"f": "json"})
    assert response.status_code == 400
    assert response.json()["type"] == "InvalidParameterValue"
    assert response.json()["description"] == job["message"]
    assert marker in job["message"]


def test_deployed_flow_process_is_named_and_logged(deployed, prefect_api):
    job_id = _submit(deployed, "hi-prefect-world", {"name": "logs"})
    deployed.wait_for(job_id, "successful", timeout=300)
    assert _wait_name(prefect_api, job_id) == f"hi-prefect-world-{job_id[:8]}"
    assert _messages(deployed, job_id)  # at least Prefect's own lines about the run
