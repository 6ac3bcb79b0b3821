"""Data by reference on Prefect workers: links read on the worker, outputs streamed from it.

A real `prefect worker` runs the deployed processes (`deploy-process-as-flow`):
standard processors (``inspect``, ``stream``, ``multi``) and a Prefect flow that writes
its outputs through pygeoapi_prefect.outputs (``streamed-flow``).
"""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml
from click.testing import CliRunner
from conftest import Pygeoapi, pygeoapi_config, start_pygeoapi
from input_server import InputServer
from ogc import validate
from reference_processes import BLOB, STREAMED_FLOW, pattern
from workers import start_process_worker

from pygeoapi_prefect.cli.main import cli
from pygeoapi_prefect.prefect.server import free_port

POOL = "pygeoapi-references-pool"
PROCESSES: dict[str, Any] = {
    "inspect": "reference_processes.InspectProcessor",
    "stream": "reference_processes.StreamProcessor",
    "streamed-flow": STREAMED_FLOW,
    "multi": "reference_processes.MultiProcessor",
    "map": "reference_processes.MapProcessor",
}
REFERENCES = {"allow": ["localhost"], "max_bytes": 4096, "timeout": 5}


@pytest.fixture(scope="module")
def inputs() -> Iterator[InputServer]:
    server = InputServer(big=4096).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def deployed(prefect_server, prefect_api, tmp_path_factory) -> Iterator[Pygeoapi]:
    folder = tmp_path_factory.mktemp("deployed-references")
    prefect_api.request("POST", "/work_pools/", json={"name": POOL, "type": "process"})
    worker = start_process_worker(prefect_server.api_url, POOL, folder)
    # raw_several: json (pygeoapi's managers' answer) where the process returned
    # one JSON map (``map``); ``multi`` (bytes among its outputs) stays multipart
    # either way, and the default is in tests/test_multipart.py.
    results = {"url": str(folder / "results"), "raw_several": "json"}
    manager = {"results": results, "references": REFERENCES}
    config = pygeoapi_config(free_port(), folder / "results", processes=PROCESSES, manager=manager)
    config_path = folder / "config.yml"
    config_path.write_text(yaml.safe_dump(config))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PREFECT_API_URL", prefect_server.api_url)
        for process_id in PROCESSES:
            result = CliRunner().invoke(
                cli,
                [
                    *("deploy-process-as-flow", process_id, "--config", str(config_path)),
                    *("--deployment-name", "refs", "--work-pool", POOL),
                ],
                catch_exceptions=False,
            )
            assert result.exit_code == 0, result.output
    processes = {
        pid: {**config["resources"][pid]["processor"], "deployment": f"{pid}/refs"}
        for pid in PROCESSES
    }
    server = start_pygeoapi(
        tmp_path_factory.mktemp("deployed-references-pygeoapi"),
        prefect_server.api_url,
        processes=processes,
        manager=manager,
    )
    yield server
    server.stop()
    os.killpg(worker.pid, signal.SIGTERM)
    worker.wait(30)


def _finished(server: Pygeoapi, process_id: str, body: dict[str, Any]) -> dict[str, Any]:
    validate(body, "execute")
    answer = server.execute(process_id, body.pop("inputs"), asynchronous=True, **body)
    assert answer.status_code == 201, answer.text
    status = server.wait_for(answer.json()["jobID"], "successful", "failed", timeout=120)
    validate(status, "statusInfo")
    return status


def test_links_are_read_on_the_worker(deployed, inputs):
    before = inputs.hits["/text.txt"]
    link = {"href": inputs.url("/text.txt"), "type": "text/plain"}
    status = _finished(deployed, "inspect", {"inputs": {"text": link}})
    assert status["status"] == "successful", status
    results = deployed.client.get(f"/jobs/{status['jobID']}/results", params={"f": "json"})
    assert results.json()["value"]["text"] == {"type": "str", "value": "hello from a link"}
    assert inputs.hits["/text.txt"] == before + 1  # read once, by the worker

    too_big = {"blob": {"href": inputs.url("/big")}}
    failed = _finished(deployed, "inspect", {"inputs": too_big})
    assert failed["status"] == "failed"
    assert "input 'blob'" in failed["message"] and "max_bytes" in failed["message"]

    internal = {"text": {"href": inputs.url("/internal-only", host="127.0.0.1")}}
    refused = deployed.execute("inspect", internal, asynchronous=True)
    assert refused.status_code == 400 and "input 'text'" in refused.json()["description"]
    assert inputs.hits["/internal-only"] == 0


@pytest.mark.parametrize("process_id", ["stream", "streamed-flow"])
def test_outputs_streamed_on_the_worker_are_served_by_reference(deployed, inputs, process_id):
    greeting = {"href": inputs.url("/text.txt"), "type": "text/plain"}
    extra = {"greeting": greeting} if process_id == "streamed-flow" else {}
    megabytes: Any = 2 if process_id == "streamed-flow" else "2"
    body = {
        "inputs": {"megabytes": megabytes, **extra},
        "outputs": {"data": {"transmissionMode": "reference"}},
        "response": "raw",
    }
    answer = deployed.execute(process_id, body.pop("inputs"), asynchronous=True, **body)
    assert answer.status_code == 201, answer.text
    job_id = answer.json()["jobID"]
    status = deployed.wait_for(job_id, "successful", "failed", timeout=120)
    assert status["status"] == "successful", status.get("message")
    results = deployed.client.get(f"/jobs/{job_id}/results")
    assert results.status_code == 204, results.text
    (href,) = re.findall(r"<([^>]*)>", results.headers["link"])
    assert httpx.get(href, timeout=60).content == pattern(2)
    if process_id == "streamed-flow":
        greeting_out = deployed.client.get(f"/jobs/{job_id}/results/greeting")
        assert greeting_out.text == "hello from a link"
        assert greeting_out.headers["content-type"] == "text/plain"


def test_several_raw_outputs_of_a_deployed_sync_job_are_multipart(deployed):
    # /req/core/process-execute-sync-raw-value-multi for a job run on a Prefect
    # worker, whose process returned its three outputs as one map.
    import email.parser
    import email.policy

    body = {"response": "raw"}
    validate({"inputs": {}, **body}, "execute")
    answer = deployed.execute("multi", {}, **body)
    assert answer.status_code == 200, answer.text
    content_type = answer.headers["content-type"]
    assert content_type.startswith("multipart/related;")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + answer.content
    )
    found = {str(p["Content-ID"]): p for p in message.iter_parts()}
    assert list(found) == ["<text>", "<numbers>", "<blob>"]
    assert found["<text>"].get_payload(decode=True) == b"hello"
    assert found["<numbers>"].get_payload(decode=True) == b"[1,2,3]"
    assert found["<blob>"].get_content_type() == "image/png"
    assert found["<blob>"].get_payload(decode=True) == BLOB

    # One named of the three: that output alone (/req/core/process-execute-sync-raw-value-one).
    alone = deployed.execute("multi", {}, response="raw", outputs={"blob": {}})
    assert alone.status_code == 200, alone.text
    assert alone.headers["content-type"] == "image/png" and alone.content == BLOB


def test_a_deployed_json_map_is_the_map_with_raw_several_json(deployed):
    # What pygeoapi answers for the process's map: to_json for a sync
    # execution, its sorted, indented dump for GET /jobs/{id}/results.
    from pygeoapi.util import json_serial, to_json
    from reference_processes import MapProcessor

    _, returned = MapProcessor({"name": "map"}).execute({})
    answer = deployed.execute("map", {}, response="raw")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert answer.content == to_json(returned).encode()

    accepted = deployed.execute("map", {}, asynchronous=True, response="raw")
    assert accepted.status_code == 201, accepted.text
    job_id = accepted.json()["jobID"]
    assert deployed.wait_for(job_id, "successful", "failed", timeout=120)["status"] == "successful"
    results = deployed.client.get(f"/jobs/{job_id}/results", params={"f": "json"})
    assert results.status_code == 200, results.text
    expected = json.dumps(returned, sort_keys=True, indent=4, default=json_serial)
    assert results.content == expected.encode()
