"""Processes on Prefect deployments, run by a real `prefect worker` process."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from conftest import ROOT, STANDARD_PROCESSES, server_env, start_pygeoapi
from workers import deployed_pygeoapi

from pygeoapi_prefect.cli.deploy import code_filename, module_name, module_source
from pygeoapi_prefect.cli.main import cli
from pygeoapi_prefect.jobs.owners import space_of

POOL = "pygeoapi-test-pool"
DEPLOYED = {
    "hi-prefect-world": STANDARD_PROCESSES["hi-prefect-world"],
    "hello-world": "HelloWorld",
    "sleep": "pygeoapi_test_processes.SleepProcessor",
    "fail": "pygeoapi_test_processes.FailProcessor",
    "progress": "pygeoapi_test_processes.ProgressProcessor",
}


@pytest.fixture(scope="module")
def deployed(prefect_server, tmp_path_factory):
    """A work pool, a worker, the test processes deployed, and pygeoapi using them."""
    manager = {"callbacks": {"allow": ["127.0.0.1/32"], "retries": 1}}
    with deployed_pygeoapi(
        prefect_server,
        tmp_path_factory,
        pool=POOL,
        name="test",
        processes=DEPLOYED,
        manager=manager,
    ) as server:
        yield server


def test_generated_module_for_a_flow_process():
    source = module_source(
        "hi-prefect-world",
        {"processor": STANDARD_PROCESSES["hi-prefect-world"]},
        {"url": "s3://b/p", "storage_options": {}},
    )
    assert "from pygeoapi_prefect.examples.hi_prefect_world import hi_prefect_world" in source
    assert 'results_url=json.loads("\\"s3://b/p\\"")' in source
    compile(source, "generated.py", "exec")


@pytest.mark.parametrize(
    ("resource", "results", "fragment"),
    [
        (
            {
                "processor": {
                    "name": "pygeoapi_prefect.processes.FlowProcessor",
                    "flow": "os; import evil:f",
                }
            },
            {"url": "/r", "storage_options": {}},
            "must be 'package.module:flow_function'",
        ),
        (
            {"processor": {"name": "HelloWorld"}},
            {"url": "s3://b", "storage_options": {"secret": "s3cr3t"}},
            "holds credentials",
        ),
    ],
)
def test_generated_module_refuses_code_and_credentials(resource, results, fragment):
    from pygeoapi_prefect.cli.deploy import DeployError

    with pytest.raises(DeployError, match=fragment):
        module_source("p", resource, results)


def test_config_values_cannot_become_code():
    import ast

    source = module_source(
        "p",
        {"processor": {"name": "HelloWorld", "x": "'); import os; os.system('boom'); ('"}},
        {"url": "/r", "storage_options": {}},
    )
    tree = ast.parse(source)
    assert [type(node).__name__ for node in tree.body] == ["Expr", "Import", "ImportFrom", "Assign"]
    calls = {
        node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
    }
    assert calls == {"process_flow", "loads"}


def test_async_and_sync_through_pygeoapi(deployed, prefect_api):
    job_id = deployed.execute("hi-prefect-world", {"name": "Worker"}, asynchronous=True).json()[
        "jobID"
    ]
    deployed.wait_for(job_id, "successful", timeout=90)
    results = deployed.client.get(f"/jobs/{job_id}/results", params={"f": "json"})
    assert results.json() == {"id": "result", "value": "Hi from Prefect, Worker!"}
    run = prefect_api.read_flow_run(job_id)
    assert run["deployment_id"] is not None

    sync = deployed.execute("hello-world", {"name": "sync"}, response="document")
    assert sync.status_code == 200, sync.text
    assert sync.json() == {"echo": "Hello sync!"}


def test_runs_started_in_prefect_are_jobs(deployed, prefect_api):
    deployment_id = prefect_api.deployment_id("hi-prefect-world/test")
    run = prefect_api.create_deployment_run(
        deployment_id,
        parameters={"name": "johnny", "message": "wazaaap", "pygeoapi_job_id": "test-id-1"},
        tags=[],
    )
    job = deployed.wait_for(run["id"], "successful", timeout=90)
    assert job["processID"] == "hi-prefect-world"
    results = deployed.client.get(f"/jobs/{run['id']}/results", params={"f": "json"})
    assert results.json() == {"id": "result", "value": "Hi from Prefect, johnny! wazaaap"}


def test_failure_says_why(deployed):
    job_id = deployed.execute("fail", {"what": "on a worker"}, asynchronous=True).json()["jobID"]
    job = deployed.wait_for(job_id, "failed", timeout=90)
    assert "cannot handle on a worker" in job["message"]


def test_dismiss_kills_the_workers_flow_process(deployed, prefect_api, tmp_path):
    beats = tmp_path / "beats"
    job_id = deployed.execute(
        "sleep", {"seconds": 120, "beats": str(beats)}, asynchronous=True
    ).json()["jobID"]
    deployed.wait_for(job_id, "running", timeout=90)
    deadline = time.monotonic() + 30
    while not beats.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert deployed.client.delete(f"/jobs/{job_id}").status_code == 200
    deadline = time.monotonic() + 30
    while prefect_api.read_flow_run(job_id)["state_type"] != "CANCELLED":
        assert time.monotonic() < deadline, "the worker never cancelled the run"
        time.sleep(0.5)
    settled = beats.stat().st_size
    time.sleep(1.0)
    assert beats.stat().st_size == settled, "the dismissed flow is still working"
    assert deployed.job(job_id).status_code == 404


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["no-such-process"], "no process 'no-such-process'"),
        (["hello-world", "--work-pool", "no-such-pool"], "work pool 'no-such-pool' does not exist"),
        (
            ["hello-world", "--work-pool", POOL, "--storage-block-name", "remote-file-system/nope"],
            "storage block 'remote-file-system/nope' cannot be loaded",
        ),
    ],
)
def test_deploy_errors_are_clear(deployed, prefect_server, monkeypatch, args, fragment):
    monkeypatch.setenv("PREFECT_API_URL", prefect_server.api_url)
    result = CliRunner().invoke(
        cli, ["deploy-process-as-flow", *args, "--config", str(ROOT / "example-config.yml")]
    )
    assert result.exit_code == 1
    assert fragment in result.output


def test_flow_code_on_s3_through_a_storage_block(
    deployed, prefect_server, prefect_api, s3, tmp_path
):
    """The seed's MinIO walk-through, on moto's S3 server: block, deploy, worker, run."""
    from prefect.filesystems import RemoteFileSystem
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: prefect_server.api_url}):
        RemoteFileSystem(
            basepath=f"s3://{s3.bucket}/flows",
            settings={
                "key": "pygeoapi-prefect-test",
                "secret": "pygeoapi-prefect-test-secret",
                "client_kwargs": {"endpoint_url": s3.endpoint},
            },
        ).save("test-sb1", overwrite=True, _sync=True)
    config = yaml.safe_load(deployed.config_path.read_text())
    config_path = tmp_path / "config.yml"
    config_path.write_text(yaml.safe_dump(config))
    env = server_env(prefect_server.api_url, tmp_path / "home")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pygeoapi_prefect.cli",
            "deploy-process-as-flow",
            "hi-prefect-world",
            "--config",
            str(config_path),
            "--prefect-queue-name",
            "default",
            "--deployment-name",
            "minio",
            "--work-pool",
            POOL,
            "--storage-block-name",
            "remote-file-system/test-sb1",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "hi-prefect-world/minio" in result.stdout
    assert f"uploading the flow code to s3://{s3.bucket}/flows..." in result.stderr

    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3.endpoint})
    # One file per distinct code: the module name and a hash of the code.
    (stored,) = fs.glob(f"{s3.bucket}/flows/*.py")
    assert re.fullmatch(r"pygeoapi_hi_prefect_world_[0-9a-f]{12}\.py", stored.rsplit("/", 1)[1])
    deployment = prefect_api.request("GET", "/deployments/name/hi-prefect-world/minio").json()
    assert "pygeoapi-prefect-test-secret" not in str(deployment)

    run = prefect_api.create_deployment_run(
        deployment["id"], parameters={"name": "from S3"}, tags=[]
    )
    deployed.wait_for(run["id"], "successful", timeout=120)
    results = deployed.client.get(f"/jobs/{run['id']}/results", params={"f": "json"})
    assert results.json() == {"id": "result", "value": "Hi from Prefect, from S3!"}


def test_progress_reported_from_the_workers_flow(deployed):
    job_id = deployed.execute("progress", {"seconds": 6}, asynchronous=True).json()["jobID"]
    deadline = time.monotonic() + 60
    while True:
        job = deployed.job(job_id).json()
        if job.get("progress") == 50:
            break
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
    assert job["status"] == "running"
    assert job["message"] == "halfway there"
    assert deployed.wait_for(job_id, "successful", timeout=60)["progress"] == 100


def test_generated_module_names_a_results_block_not_its_credentials():
    source = module_source(
        "hello-world",
        {"processor": {"name": "HelloWorld"}},
        {"url": "", "storage_options": {}, "block": "remote-file-system/results"},
    )
    assert 'results_block=json.loads("\\"remote-file-system/results\\"")' in source
    assert "results_url" not in source
    compile(source, "generated.py", "exec")


FOREIGN_FLOW = '''
from prefect import flow


@flow(name="someone-elses-flow")
def someone_elses_flow(count: int = 1) -> int:
    """Count things.

    Args:
        count: How many.
    """
    return count * 2
'''


def test_published_deployments_are_processes(
    deployed, prefect_server, prefect_api, tmp_path, monkeypatch
):
    """Deployments tagged pygeoapi.publish appear as processes, without a config entry."""
    monkeypatch.setenv("PREFECT_API_URL", prefect_server.api_url)
    config = yaml.safe_load(deployed.config_path.read_text())
    config_path = tmp_path / "config.yml"
    config_path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(
        cli,
        [
            "deploy-process-as-flow",
            "hi-prefect-world",
            "--config",
            str(config_path),
            "--deployment-name",
            "published",
            "--work-pool",
            POOL,
            "--publish",
        ],
    )
    assert result.exit_code == 0, result.output

    # Someone else's flow, deployed with Prefect alone and tagged to publish.
    (tmp_path / "foreign.py").write_text(FOREIGN_FLOW)
    from prefect import Flow
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: prefect_server.api_url}):
        Flow.from_source(source=str(tmp_path), entrypoint="foreign.py:someone_elses_flow").deploy(
            name="prod",
            work_pool_name=POOL,
            tags=["pygeoapi.publish"],
            build=False,
            push=False,
            print_next_steps=False,
            ignore_warnings=True,
        )

    server = start_pygeoapi(
        tmp_path / "pygeoapi",
        prefect_server.api_url,
        processes={"echo": "Echo"},
        manager={
            "results": config["server"]["manager"]["results"],
            "publish": {"enabled": True, "refresh_seconds": 0},
        },
    )
    try:
        listed = server.client.get("/processes", params={"f": "json"}).json()
        ids = {process["id"] for process in listed["processes"]}
        assert {"echo", "hi-prefect-world", "someone-elses-flow-prod"} <= ids
        described = server.client.get("/processes/someone-elses-flow-prod", params={"f": "json"})
        assert described.json()["title"] == "Count things."
        assert described.json()["inputs"]["count"]["schema"]["type"] == "integer"

        ours = server.execute("hi-prefect-world", {"name": "published"})
        assert ours.status_code == 200, ours.text
        assert ours.json() == {"id": "result", "value": "Hi from Prefect, published!"}

        job_id = server.execute("someone-elses-flow-prod", {"count": 3}, asynchronous=True).json()[
            "jobID"
        ]
        job = server.wait_for(job_id, "successful", timeout=90)
        assert job["processID"] == "someone-elses-flow-prod"
        # Its flow does not write to the result store: no results, a clear 404.
        missing = server.client.get(f"/jobs/{job_id}/results", params={"f": "json"})
        assert missing.status_code == 404
        assert server.execute("someone-elses-flow-prod", {"count": "x"}).status_code == 400
    finally:
        server.stop()


@pytest.fixture(scope="module")
def warm(deployed, prefect_server, prefect_api, tmp_path_factory):
    """A warm worker on a pool of its own, with hello-world and sleep deployed --warm."""
    folder = tmp_path_factory.mktemp("warm")
    prefect_api.request("POST", "/work_pools/", json={"name": "warm-pool", "type": "process"})
    env = server_env(prefect_server.api_url, folder / "prefect-home")
    with (folder / "warm.log").open("wb") as log:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pygeoapi_prefect.cli",
                "warm-worker",
                "--pool",
                "warm-pool",
                "--socket",
                str(folder / "warm.sock"),
            ],
            env=env,
            cwd=folder,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    config = yaml.safe_load(deployed.config_path.read_text())
    config_path = folder / "config.yml"
    config_path.write_text(yaml.safe_dump(config))
    for process_id in ("hello-world", "sleep"):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pygeoapi_prefect.cli",
                "deploy-process-as-flow",
                process_id,
                "--config",
                str(config_path),
                "--deployment-name",
                "warm",
                "--work-pool",
                "warm-pool",
                "--warm",
            ],
            env=env,
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    yield folder
    os.killpg(worker.pid, signal.SIGTERM)
    worker.wait(30)


def run_and_wait(prefect_api, deployment, parameters, timeout=60):
    deployment_id = prefect_api.deployment_id(deployment)
    run = prefect_api.create_deployment_run(deployment_id, parameters=parameters, tags=[])
    deadline = time.monotonic() + timeout
    while True:
        current = prefect_api.read_flow_run(run["id"])
        if current["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return current
        assert time.monotonic() < deadline, current["state_type"]
        time.sleep(0.2)


def test_warm_worker_runs_jobs_from_a_preimported_interpreter(deployed, warm, prefect_api):
    assert prefect_api.request("GET", "/deployments/name/hello-world/warm").json()[
        "job_variables"
    ] == {"command": "python -m pygeoapi_prefect.warm_client"}
    run = run_and_wait(prefect_api, "hello-world/warm", {"inputs": {"name": "warm"}})
    assert run["state_type"] == "COMPLETED"
    results = deployed.client.get(f"/jobs/{run['id']}/results", params={"f": "json"})
    assert results.json() == {"id": "echo", "value": "Hello warm!"}


def test_warm_worker_cancellation_kills_the_run(deployed, warm, prefect_api, tmp_path):
    beats = tmp_path / "beats"
    deployment_id = prefect_api.deployment_id("sleep/warm")
    run = prefect_api.create_deployment_run(
        deployment_id, parameters={"inputs": {"seconds": 120, "beats": str(beats)}}, tags=[]
    )
    deadline = time.monotonic() + 60
    while not beats.exists():
        assert time.monotonic() < deadline, prefect_api.read_flow_run(run["id"])["state_type"]
        time.sleep(0.1)
    assert deployed.client.delete(f"/jobs/{run['id']}").status_code == 200
    deadline = time.monotonic() + 30
    while prefect_api.read_flow_run(run["id"])["state_type"] != "CANCELLED":
        assert time.monotonic() < deadline
        time.sleep(0.3)
    settled = beats.stat().st_size
    time.sleep(1.0)
    assert beats.stat().st_size == settled, "the cancelled run is still working"


def test_callbacks_are_sent_from_the_worker(deployed):
    from test_callbacks_and_links import Receiver

    receiver = Receiver()
    job_id = deployed.execute(
        "hi-prefect-world", {"name": "cb"}, asynchronous=True, subscriber=receiver.subscriber()
    ).json()["jobID"]
    in_progress = receiver.wait_for("/in-progress", timeout=90)
    assert in_progress["jobID"] == job_id
    assert in_progress["status"] == "running"
    assert receiver.wait_for("/success", timeout=90) == {"result": "Hi from Prefect, cb!"}

    failing = Receiver()
    deployed.execute(
        "fail", {"what": "callbacks"}, asynchronous=True, subscriber=failing.subscriber()
    )
    failed = failing.wait_for("/failed", timeout=90)
    assert failed["status"] == "failed"
    assert "cannot handle callbacks" in failed["message"]


def test_module_names_are_distinct_per_process():
    assert module_name("hi-prefect-world") == "pygeoapi_hi_prefect_world"
    names = {module_name(pid) for pid in ("a-b", "a_b", "a.b", "a b", "A-B")}
    assert len(names) == 5
    assert all(name.isidentifier() for name in names)


def test_each_distinct_code_has_a_file_of_its_own():
    # Two configs deploying one process from the same folder (or storage
    # block) must not overwrite each other's code.
    first = module_source(
        "hello-world", {"processor": {"name": "HelloWorld"}}, {"url": "/a", "storage_options": {}}
    )
    second = module_source(
        "hello-world", {"processor": {"name": "HelloWorld"}}, {"url": "/b", "storage_options": {}}
    )
    assert code_filename("hello-world", first) != code_filename("hello-world", second)
    assert code_filename("hello-world", first) == code_filename("hello-world", first)
    assert code_filename("hello-world", first).startswith("pygeoapi_hello_world_")
    assert code_filename("hello-world", first).removesuffix(".py").isidentifier()


def test_metrics_count_what_pygeoapi_sees_of_deployed_jobs(deployed):
    from test_metrics import scrape, total

    from pygeoapi_prefect.metrics import PREFIX

    submitted, finished = PREFIX + "jobs_submitted_total", PREFIX + "jobs_finished_total"
    before, _ = scrape(deployed.base_url)
    job_id = deployed.execute("hello-world", {"name": "m"}, asynchronous=True).json()["jobID"]
    deployed.wait_for(job_id, "successful", timeout=90)
    assert deployed.execute("hello-world", {"name": "m"}).status_code == 200
    after, _ = scrape(deployed.base_url)

    def grew(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert grew(submitted, process="hello-world", mode="async") == 1
    assert grew(submitted, process="hello-world", mode="sync") == 1
    # Only the sync job's end is seen here; the worker records the async one's.
    assert grew(finished, process="hello-world", outcome="successful") == 1
    assert grew(PREFIX + "job_run_seconds_count") == 0
    assert grew(PREFIX + "jobs_running") == 0


def test_deployed_jobs_belong_to_their_owner(deployed, prefect_server, prefect_api, tmp_path):
    # The same deployments behind a pygeoapi with identities (a trusted proxy's
    # header): the worker's flow stores the results under the owner's space.
    config = yaml.safe_load(deployed.config_path.read_text())
    manager = config["server"]["manager"]
    server = start_pygeoapi(
        tmp_path,
        prefect_server.api_url,
        processes={pid: resource["processor"] for pid, resource in config["resources"].items()},
        manager={
            "results": manager["results"],
            "auth": {"mode": "header"},
            "heartbeat": {"install_automation": False},
        },
    )
    try:
        gina = {"X-Forwarded-User": "gina"}
        answer = server.client.post(
            "/processes/hi-prefect-world/execution",
            json={"inputs": {"name": "Gina"}},
            headers={**gina, "Prefer": "respond-async"},
        )
        assert answer.status_code == 201, answer.text
        job_id = answer.json()["jobID"]
        assert "pygeoapi.owner:gina" in prefect_api.read_flow_run(job_id)["tags"]
        deadline = time.monotonic() + 90
        while server.client.get(f"/jobs/{job_id}", headers=gina).json()["status"] != "successful":
            assert time.monotonic() < deadline, "the deployed job never finished"
            time.sleep(0.2)
        results = server.client.get(f"/jobs/{job_id}/results", params={"f": "json"}, headers=gina)
        assert results.json() == {"id": "result", "value": "Hi from Prefect, Gina!"}
        stored = Path(manager["results"]["url"]) / space_of("pygeoapi.owner:gina") / job_id
        assert stored.is_dir()
        other = server.client.get(f"/jobs/{job_id}", headers={"X-Forwarded-User": "hal"})
        assert other.status_code == 404
    finally:
        server.stop()


def test_a_deployed_job_is_left_to_its_worker_by_local_recovery(
    deployed, prefect_api, pygeoapi_factory
):
    # A worker holds a run Pending while it starts the run's process. Another
    # server that runs the same process locally must not take the run over
    # as an orphaned queued job of its own (it ran such runs a second time).
    from pygeoapi_prefect.execution.leases import HOLDER_LABEL
    from pygeoapi_prefect.jobs import runs as jobs

    scan = 1
    pygeoapi_factory(
        processes={"hello-world": "HelloWorld"},
        manager={"recovery": {"lease_seconds": 4, "scan_seconds": scan}},
    )
    deployment = prefect_api.request("GET", "/deployments/name/hello-world/test").json()
    run = prefect_api.request(
        "POST",
        f"/deployments/{deployment['id']}/create_flow_run",
        json={
            "parameters": {"inputs": {"name": "left alone"}},
            "tags": jobs.job_tags("hello-world", None),
            # Pending from the start: the worker only picks up Scheduled runs.
            "state": {"type": "PENDING", "name": "Submitting"},
        },
    ).json()
    time.sleep(2 + 5 * scan)  # past the recovery's settling time, five scans
    after = prefect_api.read_flow_run(run["id"])
    assert after["state_type"] == "PENDING"
    assert HOLDER_LABEL not in (after.get("labels") or {})
    prefect_api.request("DELETE", f"/flow_runs/{run['id']}")
