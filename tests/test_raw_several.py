"""``server.manager.results.raw_several: json``: the process's own JSON map, as pygeoapi answers.

With the switch, a raw answer of several outputs by value that the process
returned as one JSON map is that map, byte for byte what pygeoapi's own
Flask app with its TinyDB manager answers for the same process, sync and
async (``GET /jobs/{id}/results``). Where there is no such map (bytes among
the outputs, outputs streamed through the outputs API, a mix with outputs by
reference) the answer stays ``multipart/related``. The default (multipart
for the same map) is in tests/test_multipart.py. Real parts: one gunicorn
server with the switch, pygeoapi's own app beside it, the Prefect server.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import STANDARD_PROCESSES
from ogc import validate
from reference_processes import BLOB, pattern
from servers import Served, start_server
from test_multipart import MODE_IDS, MODES, parts, payload, result_links, run

from pygeoapi_prefect.config import ResultStoreConfig

PROCESSES = {
    **STANDARD_PROCESSES,
    "map": "reference_processes.MapProcessor",
    "multi": "reference_processes.MultiProcessor",
    "stream": "reference_processes.StreamProcessor",
}


@pytest.fixture(scope="module")
def as_json(prefect_server, tmp_path_factory) -> Iterator[Served]:
    server = start_server(
        "gunicorn",
        tmp_path_factory.mktemp("raw-several-json"),
        prefect_server.api_url,
        processes=PROCESSES,
        manager={"results": {"raw_several": "json"}},
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def own(tmp_path_factory) -> Iterator[Served]:
    """pygeoapi's own Flask app with its TinyDB manager (no Prefect at all)."""
    folder = tmp_path_factory.mktemp("raw-several-tinydb")
    (folder / "outputs").mkdir()  # TinyDBManager writes there, but does not make it
    manager = {
        "name": "TinyDB",
        "connection": str(folder / "jobs.db"),
        "output_dir": str(folder / "outputs"),
    }
    server = start_server(
        "pygeoapi", folder, None, processes={"map": PROCESSES["map"]}, manager=manager
    )
    try:
        yield server
    finally:
        server.stop()


def results(server: Served, body: dict[str, Any], *, asynchronous: bool) -> Any:
    """``run`` of process ``map``; async results asked for as JSON (pygeoapi's own app
    answers HTML to a request that does not say)."""
    if not asynchronous:
        return run(server, "map", body, asynchronous=False)
    answer = server.execute("map", {}, asynchronous=True, **body)
    assert answer.status_code == 201, answer.text
    job_id = answer.json()["jobID"]
    status = server.wait_for(job_id, "successful", "failed", timeout=60)
    assert status["status"] == "successful", status
    return server.client.get(f"/jobs/{job_id}/results", params={"f": "json"})


def test_the_switch_is_a_config_key_with_the_standard_as_default():
    assert ResultStoreConfig().raw_several == "multipart"
    assert ResultStoreConfig(raw_several="json").raw_several == "json"


@pytest.mark.parametrize("asynchronous", MODES, ids=MODE_IDS)
def test_a_json_map_is_what_pygeoapi_answers(as_json, own, asynchronous):
    body = {"response": "raw"}
    ours = results(as_json, body, asynchronous=asynchronous)
    theirs = results(own, body, asynchronous=asynchronous)
    assert theirs.status_code == 200, theirs.text
    assert ours.status_code == 200, ours.text
    assert ours.headers["content-type"] == theirs.headers["content-type"]
    assert ours.headers["content-type"].startswith("application/json")
    assert ours.content == theirs.content
    assert json.loads(ours.content) == {
        "greeting": "héllo <world>" if asynchronous else "héllo &lt;world&gt;",
        "numbers": {"b": [1, 2], "a": 0.5},
    }


@pytest.mark.parametrize("asynchronous", MODES, ids=MODE_IDS)
def test_outputs_named_by_value_are_still_the_map(as_json, own, asynchronous):
    body = {"response": "raw", "outputs": {"greeting": {}, "numbers": {}}}
    ours = results(as_json, body, asynchronous=asynchronous)
    theirs = results(own, body, asynchronous=asynchronous)
    assert ours.status_code == theirs.status_code == 200
    assert ours.content == theirs.content


@pytest.mark.parametrize("asynchronous", MODES, ids=MODE_IDS)
def test_bytes_among_the_outputs_stay_multipart(as_json, asynchronous):
    # JSON cannot hold the PNG: there is no JSON map of these outputs.
    found = parts(run(as_json, "multi", {"response": "raw"}, asynchronous=asynchronous))
    assert list(found) == ["text", "numbers", "blob"]
    assert payload(found["blob"]) == BLOB


@pytest.mark.parametrize("asynchronous", MODES, ids=MODE_IDS)
def test_streamed_outputs_stay_multipart(as_json, asynchronous):
    body = {"inputs": {"megabytes": "1"}, "response": "raw"}
    found = parts(run(as_json, "stream", body, asynchronous=asynchronous))
    assert payload(found["data"]) == pattern(1)
    assert payload(found["note"]) == b"written by the process"


@pytest.mark.parametrize("asynchronous", MODES, ids=MODE_IDS)
def test_a_mix_with_references_stays_multipart(as_json, asynchronous):
    body = {
        "response": "raw",
        "outputs": {"greeting": {}, "numbers": {"transmissionMode": "reference"}},
    }
    answer = run(as_json, "map", body, asynchronous=asynchronous)
    found = parts(answer)
    assert payload(found["greeting"]) == "héllo <world>".encode()
    assert payload(found["numbers"]) == b""
    assert set(result_links(answer)) == {"numbers"}


def test_one_output_named_and_documents_are_unchanged(as_json):
    one = run(as_json, "map", {"response": "raw", "outputs": {"numbers": {}}}, asynchronous=False)
    assert one.status_code == 200 and one.json() == {"b": [1, 2], "a": 0.5}
    document = run(as_json, "map", {"response": "document"}, asynchronous=False)
    assert document.status_code == 200
    validate(document.json(), "results")
    # The process description still says what the standard says: each output
    # by value or by reference.
    description = as_json.client.get("/processes/map", params={"f": "json"}).json()
    validate(description, "process")
    assert description["outputTransmission"] == ["value", "reference"]
