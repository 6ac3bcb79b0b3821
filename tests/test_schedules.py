"""Scheduled jobs: ``deploy-process-as-flow --interval/--cron --inputs``, run by a real worker.

The scheduled runs are jobs: listed in ``/jobs`` with status and results, and
their steps are published as job events from the worker (a real mosquitto).
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from datetime import UTC, datetime

import pytest
import yaml
from click.testing import CliRunner
from conftest import pygeoapi_config, start_pygeoapi
from mqtt import Broker, Subscriber
from workers import start_process_worker

from pygeoapi_prefect.cli.main import cli
from pygeoapi_prefect.events import ENV_PUBSUB_URL
from pygeoapi_prefect.prefect.server import free_port

PROCESS = "scheduled-hello"


def _deploy(config_path, pool, *args):
    return CliRunner().invoke(
        cli,
        [
            "deploy-process-as-flow",
            PROCESS,
            "--config",
            str(config_path),
            "--deployment-name",
            "sched",
            "--work-pool",
            pool,
            *args,
        ],
        catch_exceptions=False,
    )


@pytest.fixture(scope="module")
def scheduled(prefect_server, prefect_api, tmp_path_factory):
    """A worker (with the broker's URL in its environment), a deployment on a schedule."""
    folder = tmp_path_factory.mktemp("schedules")
    broker = Broker(folder)
    broker.start()
    pool = f"schedules-{uuid.uuid4().hex[:8]}"
    prefect_api.request("POST", "/work_pools/", json={"name": pool, "type": "process"})
    worker = start_process_worker(
        prefect_server.api_url, pool, folder, env={ENV_PUBSUB_URL: broker.url}
    )
    pubsub = {"name": "MQTT", "broker": {"url": broker.url, "channel": "sched"}}
    config = pygeoapi_config(
        free_port(),
        folder / "results",
        processes={PROCESS: "HelloWorld"},
        extra={"pubsub": pubsub},
    )
    config_path = folder / "config.yml"
    config_path.write_text(yaml.safe_dump(config))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PREFECT_API_URL", prefect_server.api_url)
        result = _deploy(
            config_path, pool, "--interval", "20", "--inputs", json.dumps({"name": "schedule"})
        )
    assert result.exit_code == 0, result.output
    server = start_pygeoapi(
        tmp_path_factory.mktemp("scheduled-pygeoapi"),
        prefect_server.api_url,
        processes={PROCESS: {"name": "HelloWorld", "deployment": f"{PROCESS}/sched"}},
        manager={"results": {"url": str(folder / "results")}},
        extra={"pubsub": pubsub},
    )
    deployment_id = prefect_api.deployment_id(f"{PROCESS}/sched")
    yield server, broker, deployment_id, config_path, pool
    server.stop()
    prefect_api.request("DELETE", f"/deployments/{deployment_id}", allow_404=True)
    # The scheduler made runs ahead: none may stay behind for the tests that follow.
    while prefect_api.request(
        "POST",
        "/flow_runs/bulk_delete",
        json={"flow_runs": {"tags": {"all_": [f"pygeoapi.process:{PROCESS}"]}}, "limit": 50},
    ).json()["deleted"]:
        pass
    os.killpg(worker.pid, signal.SIGTERM)
    worker.wait(30)
    broker.stop()


def test_scheduled_runs_are_jobs_with_results_and_events(scheduled, prefect_api):
    server, broker, deployment_id, _, _ = scheduled
    schedules = prefect_api.request("GET", f"/deployments/{deployment_id}/schedules").json()
    assert [s["schedule"]["interval"] for s in schedules] == [20.0]
    assert schedules[0]["parameters"] == {"inputs": {"name": "schedule"}}
    subscriber = Subscriber(broker)
    try:
        # What Prefect's scheduler service does every minute or so, asked for now.
        prefect_api.request(
            "POST",
            f"/deployments/{deployment_id}/schedule",
            json={"start_time": datetime.now(UTC).isoformat(), "max_runs": 1, "min_runs": 1},
        )
        # The schedule's future runs are listed as accepted jobs.
        upcoming = server.client.get("/jobs", params={"processID": PROCESS}).json()["jobs"]
        assert upcoming and {j["processID"] for j in upcoming} == {PROCESS}
        found = None
        deadline = time.monotonic() + 150
        while found is None and time.monotonic() < deadline:
            params = {"processID": PROCESS, "status": "successful", "limit": 1}
            listed = server.client.get("/jobs", params=params).json()["jobs"]
            found = listed[0] if listed else None
            time.sleep(0.5)
        assert found is not None, "no scheduled job ran to success"
        job_id = found["jobID"]
        results = server.client.get(f"/jobs/{job_id}/results", params={"f": "json"})
        assert results.status_code == 200
        assert results.json() == {"id": "echo", "value": "Hello schedule!"}
        run = prefect_api.read_flow_run(job_id)
        assert run["deployment_id"] == deployment_id
        assert run["auto_scheduled"] is True
        # Its steps, published from the worker (the broker URL from its environment).
        events = subscriber.wait_for(job_id, "successful", timeout=60)
        kinds = [e["type"].removeprefix("org.pygeoapi.job.") for _, e in events]
        assert kinds == ["running", "successful"]
        for topic, event in events:
            assert topic == f"sched/processes/{PROCESS}/jobs/{job_id}"
            assert event["specversion"] == "1.0" and event["id"] and event["source"]
            assert event["data"]["jobID"] == job_id
    finally:
        subscriber.close()


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (
            ["--interval", "60", "--inputs", '{"nmae": "x"}'],
            ["unknown input 'nmae'", "missing required input 'name'"],
        ),
        (["--interval", "60", "--inputs", '{"name": 5}'], ["'name'"]),
        (["--cron", "every morning", "--inputs", '{"name": "x"}'], ["--cron 'every morning'"]),
        (["--inputs", '{"name": "x"}'], ["add --cron or --interval"]),
        (["--cron", "0 6 * * *", "--interval", "60"], ["not both"]),
    ],
)
def test_schedule_errors_name_the_input_or_option(scheduled, prefect_server, args, fragments):
    _, _, _, config_path, pool = scheduled
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PREFECT_API_URL", prefect_server.api_url)
        result = _deploy(config_path, pool, *args)
    assert result.exit_code == 1, result.output
    for fragment in fragments:
        assert fragment in result.output


def test_inputs_that_are_not_json_are_refused(scheduled):
    _, _, _, config_path, pool = scheduled
    result = _deploy(config_path, pool, "--interval", "60", "--inputs", "{name: x}")
    assert result.exit_code == 2
    assert "--inputs" in result.output
