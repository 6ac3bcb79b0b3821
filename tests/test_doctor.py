"""`pygeoapi-prefect doctor` against a real Prefect server, work pools and worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from click.testing import CliRunner
from conftest import pygeoapi_config, server_env

from pygeoapi_prefect.cli.deploy import WARM_COMMAND
from pygeoapi_prefect.cli.main import cli
from pygeoapi_prefect.prefect.server import free_port

ONLINE, IDLE, GONE = "doctor-online", "doctor-idle", "doctor-gone"
PUBLISH_TAG = "doctor.publish"


def wait_until(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


@pytest.fixture(scope="module")
def pools(prefect_server, prefect_api, tmp_path_factory):
    """Three pools: one with a real worker, one without, one deleted after a deployment.

    hello-world is deployed with the CLI into the first; the others get a
    deployment of the same flow through the REST API, and the pool without a
    worker also a published deployment for warm workers.
    """
    folder = tmp_path_factory.mktemp("doctor")
    for pool in (ONLINE, IDLE, GONE):
        prefect_api.request("POST", "/work_pools/", json={"name": pool, "type": "process"})
    env = server_env(prefect_server.api_url, folder / "prefect-home")
    with (folder / "worker.log").open("wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", ONLINE],
            env=env,
            cwd=folder,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    config = folder / "deploy-config.yml"
    config.write_text(yaml.safe_dump(pygeoapi_config(free_port(), folder / "results")))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PREFECT_API_URL", prefect_server.api_url)
        patch.chdir(folder)
        deployed = CliRunner().invoke(
            cli,
            [
                "deploy-process-as-flow",
                "hello-world",
                "--config",
                str(config),
                "--deployment-name",
                "online",
                "--work-pool",
                ONLINE,
            ],
        )
    assert deployed.exit_code == 0, deployed.output
    flow = prefect_api.request("GET", "/flows/name/hello-world").json()
    for pool in (IDLE, GONE):
        prefect_api.request(
            "POST",
            "/deployments/",
            json={"name": pool, "flow_id": flow["id"], "work_pool_name": pool},
        )
    prefect_api.request(
        "POST",
        "/deployments/",
        json={
            "name": "published-warm",
            "flow_id": flow["id"],
            "work_pool_name": IDLE,
            "tags": [PUBLISH_TAG],
            "job_variables": {"command": WARM_COMMAND},
        },
    )
    prefect_api.request("DELETE", f"/work_pools/{GONE}")

    def online():
        found = prefect_api.request("POST", f"/work_pools/{ONLINE}/workers/filter", json={})
        return any(w["status"] == "ONLINE" for w in found.json())

    try:
        wait_until(online, 60, f"the worker never came online: {(folder / 'worker.log')}")
        yield deployed
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)


def doctor(tmp_path, prefect_server, *args, deployment=None, **manager):
    processes = {"hello-world": {"name": "HelloWorld"}}
    if deployment:
        processes["hello-world"]["deployment"] = deployment
    config = pygeoapi_config(
        free_port(),
        tmp_path / "results",
        processes=processes,
        manager={"connection": prefect_server.api_url, **manager},
    )
    path = tmp_path / "doctor-config.yml"
    path.write_text(yaml.safe_dump(config))
    return CliRunner().invoke(cli, ["doctor", "--config", str(path), *args])


def test_deploy_shows_its_progress_on_stderr(pools):
    steps = pools.stderr
    for step in (
        "building the flow code of hello-world",
        f"checking work pool {ONLINE}",
        "writing the flow code to",
        "/pygeoapi_hello_world_",
        "registering the deployment hello-world/online",
    ):
        assert step in steps, steps
    assert "deployment hello-world/online is ready" in pools.stdout


def test_all_good_with_an_online_worker(tmp_path, prefect_server, pools):
    result = doctor(tmp_path, prefect_server, deployment="hello-world/online")
    assert result.exit_code == 0, result.output
    assert f"ok   pool {ONLINE}: 1 online worker(s)" in result.output
    assert "used by hello-world/online" in result.output
    assert "ok   results: result store" in result.output
    assert "all good" in result.output


def test_a_pool_without_a_worker(tmp_path, prefect_server, pools):
    result = doctor(tmp_path, prefect_server, deployment=f"hello-world/{IDLE}")
    assert result.exit_code == 1
    assert (
        f"FAIL pool {IDLE}: work pool {IDLE} (used by hello-world/{IDLE}) has no online worker "
        "(none ever connected)" in result.output
    )
    assert (
        f"fix: start a worker where the processes' packages are installed: `prefect worker "
        f"start --pool {IDLE}`" in result.output
    )
    assert "1 check(s) failed" in result.output


def test_a_missing_pool_and_a_missing_deployment(tmp_path, prefect_server, pools):
    result = doctor(tmp_path, prefect_server, "--pool", "no-such-pool", deployment="hello-world/x")
    assert result.exit_code == 1
    assert (
        "FAIL pool no-such-pool: work pool no-such-pool (asked for with --pool) does not exist"
        in result.output
    )
    assert "fix: create it with `prefect work-pool create no-such-pool --type process`" in (
        result.output
    )
    assert (
        "FAIL deployment hello-world/x: process hello-world runs on the Prefect deployment "
        "hello-world/x, which does not exist" in result.output
    )
    assert "fix: run `pygeoapi-prefect deploy-process-as-flow hello-world" in result.output


def test_a_deployment_whose_pool_was_deleted(tmp_path, prefect_server, pools):
    result = doctor(tmp_path, prefect_server, deployment=f"hello-world/{GONE}")
    assert result.exit_code == 1
    assert (
        f"FAIL deployment hello-world/{GONE}: deployment hello-world/{GONE} has no work pool"
        in result.output
    )
    assert "fix: create the pool (`prefect work-pool create POOL --type process`)" in (
        result.output
    )


def test_published_deployments_pools_are_checked_and_warm_ones_need_a_warm_worker(
    tmp_path, prefect_server, pools
):
    result = doctor(tmp_path, prefect_server, publish={"enabled": True, "tag": PUBLISH_TAG})
    assert result.exit_code == 1
    assert (
        f"FAIL pool {IDLE}: work pool {IDLE} (used by hello-world/published-warm) has no "
        "online worker" in result.output
    )
    assert f"`pygeoapi-prefect warm-worker --pool {IDLE}`" in result.output


def test_an_unwritable_result_store(tmp_path, prefect_server):
    blocker = tmp_path / "a-file"
    blocker.write_text("a file where the results folder should be")
    result = doctor(tmp_path, prefect_server, results={"url": str(blocker / "results")})
    assert result.exit_code == 1
    assert f"FAIL results: The result store file://{blocker}/results failed to " in result.output
    assert "fix: check server.manager.results (url or block, storage_options)" in result.output
    assert "ok   prefect:" in result.output


def test_an_unreadable_result_store_block(tmp_path, prefect_server):
    result = doctor(tmp_path, prefect_server, results={"block": "local-file-system/no-such"})
    assert result.exit_code == 1
    assert (
        "FAIL results: The result store local-file-system/no-such failed to open: ValueError: "
        "block 'local-file-system/no-such' cannot be loaded" in result.output
    )


def test_a_missing_config(tmp_path):
    result = CliRunner().invoke(cli, ["doctor", "--config", str(tmp_path / "nope.yml")])
    assert result.exit_code == 1
    assert f"FAIL config: {tmp_path / 'nope.yml'} does not exist" in result.output
    assert "fix: pass --config FILE or set PYGEOAPI_CONFIG" in result.output


def test_a_config_that_is_not_yaml(tmp_path):
    path = tmp_path / "broken.yml"
    path.write_text("server: [unclosed\n")
    result = CliRunner().invoke(cli, ["doctor", "--config", str(path)])
    assert result.exit_code == 1
    assert f"FAIL config: {path} cannot be read:" in result.output
    assert "fix: check that the file is a readable pygeoapi config in YAML" in result.output
