"""Job logs, names and summaries of deployed jobs, run by a real `prefect worker` process."""

from __future__ import annotations

import os
import signal
import uuid

import pytest
import yaml
from click.testing import CliRunner
from conftest import STANDARD_PROCESSES, pygeoapi_config, start_pygeoapi
from test_job_logs import _artifacts, _kept_and_dropped, _messages, _wait_logs, _wait_name
from workers import start_process_worker

from pygeoapi_prefect.cli.main import cli
from pygeoapi_prefect.prefect.server import free_port

POOL = "pygeoapi-logs-pool"
DEPLOYED = {
    "chatty": STANDARD_PROCESSES["chatty"],
    "hi-prefect-world": STANDARD_PROCESSES["hi-prefect-world"],
}
MANAGER = {"logs": {"max_lines": 8}}
#: A worker starts a new Python process per run: slow on a busy machine.
pytestmark = pytest.mark.timeout(420)


@pytest.fixture(scope="module")
def deployed(prefect_server, prefect_api, tmp_path_factory):
    """A work pool, a worker, chatty and hi-prefect-world deployed, pygeoapi using them."""
    folder = tmp_path_factory.mktemp("log-deployments")
    prefect_api.request("POST", "/work_pools/", json={"name": POOL, "type": "process"})
    worker = start_process_worker(prefect_server.api_url, POOL, folder)
    config = pygeoapi_config(free_port(), folder / "results", processes=DEPLOYED, manager=MANAGER)
    config_path = folder / "deploy-config.yml"
    config_path.write_text(yaml.safe_dump(config))
    runner = CliRunner()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PREFECT_API_URL", prefect_server.api_url)
        for process_id in DEPLOYED:
            result = runner.invoke(
                cli,
                [
                    "deploy-process-as-flow",
                    process_id,
                    "--config",
                    str(config_path),
                    "--deployment-name",
                    "logs",
                    "--work-pool",
                    POOL,
                ],
                catch_exceptions=False,
            )
            assert result.exit_code == 0, result.output
            config["resources"][process_id]["processor"] = {
                **config["resources"][process_id]["processor"],
                "deployment": f"{process_id}/logs",
            }
    server = start_pygeoapi(
        tmp_path_factory.mktemp("log-deployed-pygeoapi"),
        prefect_server.api_url,
        processes={pid: resource["processor"] for pid, resource in config["resources"].items()},
        manager={"results": {"url": str(folder / "results")}, **MANAGER},
    )
    yield server
    server.stop()
    os.killpg(worker.pid, signal.SIGTERM)
    worker.wait(30)


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
