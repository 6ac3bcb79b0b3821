"""Raw answers of several outputs: ``multipart/related`` on every app (issue 13 review, item 1).

OGC 18-062r2 ``/req/core/process-execute-sync-raw-value-multi`` and
``-raw-mixed-multi`` (and ``/req/core/job-results-async-raw-*``, "as per"
them): 200, ``multipart/related`` (RFC 2387), one part per output, its
``Content-ID`` the output id, its own ``Content-Type``; a part by reference
has an empty body and a ``Content-Location``. Real parts: gunicorn with the
Flask app, uvicorn with the Starlette app and pygeoapi's Django project
(tests/servers.py), the Prefect server, and Python's ``email`` package as
the client that parses the answer.
"""

from __future__ import annotations

import email.message
import email.parser
import email.policy
import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import STANDARD_PROCESSES
from ogc import validate
from reference_processes import BLOB, pattern
from servers import KINDS, Served, start_server

PROCESSES = {
    **STANDARD_PROCESSES,
    "multi": "reference_processes.MultiProcessor",
    "stream": "reference_processes.StreamProcessor",
    "map": "reference_processes.MapProcessor",
}
RESULTS_REL = "http://www.opengis.net/def/rel/ogc/1.0/results"
LINK = re.compile(r'<(?P<href>[^>]*)>;\s*rel="(?P<rel>[^"]*)";[^<]*title="(?P<title>[^"]*)"')
MODES = [False, True]
MODE_IDS = ["sync", "async"]


@pytest.fixture(scope="module", params=KINDS)
def served(request, prefect_server, tmp_path_factory) -> Iterator[Served]:
    server = start_server(
        request.param,
        tmp_path_factory.mktemp(f"multipart-{request.param}"),
        prefect_server.api_url,
        processes=PROCESSES,
    )
    try:
        yield server
    finally:
        server.stop()


def run(server: Served, process_id: str, body: dict[str, Any], *, asynchronous: bool) -> Any:
    """The answer of a job: the sync execution's, or the async job's results."""
    validate(body, "execute")
    body = dict(body)
    inputs = body.pop("inputs", {})
    answer = server.execute(process_id, inputs, asynchronous=asynchronous, **body)
    if not asynchronous:
        return answer
    assert answer.status_code == 201, answer.text
    job_id = answer.json()["jobID"]
    status = server.wait_for(job_id, "successful", "failed", timeout=60)
    validate(status, "statusInfo")
    assert status["status"] == "successful", status
    return server.client.get(f"/jobs/{job_id}/results")


def parts(answer: Any) -> dict[str, email.message.EmailMessage]:
    """The parts of a multipart/related answer by output id, parsed by Python's email package."""
    assert answer.status_code == 200, answer.text[:500]
    content_type = answer.headers["content-type"]
    assert content_type.startswith("multipart/related;"), content_type
    if "content-length" in answer.headers:
        assert int(answer.headers["content-length"]) == len(answer.content)
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + answer.content
    )
    assert message.is_multipart() and message.get_content_type() == "multipart/related"
    found: dict[str, email.message.EmailMessage] = {}
    for part in message.iter_parts():
        assert isinstance(part, email.message.EmailMessage)
        content_id = str(part["Content-ID"])
        assert content_id.startswith("<") and content_id.endswith(">"), content_id
        found[content_id[1:-1]] = part
    # RFC 2387: the type parameter names the root (first) part's media type.
    first = next(iter(found.values()))
    assert message.get_param("type") == first.get_content_type()
    return found


def payload(part: email.message.EmailMessage) -> bytes:
    data = part.get_payload(decode=True)
    assert isinstance(data, bytes)
    return data


def result_links(answer: Any) -> dict[str, str]:
    """The output links of an answer by output id (not the job's own results link)."""
    found = {}
    # One header per link, or (Django) one joined list of them (RFC 9110 5.3).
    values = re.split(r",\s*(?=<)", ",".join(answer.headers.get_list("link")))
    for value in values:
        match = LINK.match(value.strip())
        if match and match["rel"] == RESULTS_REL and not match["href"].endswith("/results"):
            found[match["title"]] = match["href"]
    return found


@pytest.mark.parametrize("asynchronous", MODES, ids=MODE_IDS)
def test_raw_outputs_by_value_are_multipart(served, asynchronous):
    # /req/core/process-execute-sync-raw-value-multi, /req/core/job-results-async-raw-value-multi
    answer = run(served, "multi", {"response": "raw"}, asynchronous=asynchronous)
    found = parts(answer)
    assert list(found) == ["text", "numbers", "blob"]
    assert found["text"].get_content_type() == "text/plain"
    assert payload(found["text"]) == b"hello"
    assert found["numbers"].get_content_type() == "application/json"
    assert json.loads(payload(found["numbers"])) == [1, 2, 3]
    assert found["blob"].get_content_type() == "image/png"
    assert payload(found["blob"]) == BLOB
    assert result_links(answer) == {}  # nothing by reference

    # Every output by value, as the default (no "outputs" in the request) is.
    named = run(
        served,
        "multi",
        {"response": "raw", "outputs": {name: {} for name in ("text", "numbers", "blob")}},
        asynchronous=asynchronous,
    )
    assert list(parts(named)) == ["text", "numbers", "blob"]


@pytest.mark.parametrize("asynchronous", MODES, ids=MODE_IDS)
def test_a_json_map_of_outputs_is_multipart_by_default(served, asynchronous):
    # results.raw_several defaults to the standard's answer, even where the
    # process returned one JSON map (its own map: tests/test_raw_several.py).
    found = parts(run(served, "map", {"response": "raw"}, asynchronous=asynchronous))
    assert list(found) == ["greeting", "numbers"]
    assert payload(found["greeting"]) == "héllo <world>".encode()
    assert found["numbers"].get_content_type() == "application/json"
    assert json.loads(payload(found["numbers"])) == {"b": [1, 2], "a": 0.5}


@pytest.mark.parametrize("asynchronous", MODES, ids=MODE_IDS)
def test_only_the_outputs_asked_for_are_parts(served, asynchronous):
    body = {"response": "raw", "outputs": {"blob": {}, "text": {}}}
    found = parts(run(served, "multi", body, asynchronous=asynchronous))
    assert set(found) == {"text", "blob"}
    assert payload(found["blob"]) == BLOB and payload(found["text"]) == b"hello"


@pytest.mark.parametrize("asynchronous", MODES, ids=MODE_IDS)
def test_one_output_named_of_several_is_that_output_alone(served, asynchronous):
    # /req/core/process-execute-sync-raw-value-one: the output itself, its media type.
    body = {"response": "raw", "outputs": {"blob": {}}}
    answer = run(served, "multi", body, asynchronous=asynchronous)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "image/png"
    assert answer.content == BLOB
    numbers = run(
        served, "multi", {"response": "raw", "outputs": {"numbers": {}}}, asynchronous=asynchronous
    )
    assert numbers.headers["content-type"].startswith("application/json")
    assert numbers.json() == [1, 2, 3]


@pytest.mark.parametrize("asynchronous", MODES, ids=MODE_IDS)
def test_mixed_values_and_references(served, asynchronous):
    # /req/core/process-execute-sync-raw-mixed-multi, /req/core/job-results-async-raw-mixed-multi
    body = {
        "response": "raw",
        "outputs": {
            "text": {"transmissionMode": "value"},
            "numbers": {"transmissionMode": "reference"},
            "blob": {"transmissionMode": "reference"},
        },
    }
    answer = run(served, "multi", body, asynchronous=asynchronous)
    found = parts(answer)
    assert payload(found["text"]) == b"hello"
    links = result_links(answer)
    assert set(links) == {"numbers", "blob"}
    for name, expected in (("numbers", b"[1,2,3]"), ("blob", BLOB)):
        assert payload(found[name]) == b""
        location = str(found[name]["Content-Location"])
        assert location == links[name]
        assert re.fullmatch(rf"{served.base_url}/jobs/[0-9a-f-]{{36}}/results/{name}", location)
        got = httpx.get(location, timeout=30)
        assert got.status_code == 200 and got.content == expected
        assert got.headers["content-type"] == found[name].get_content_type()


@pytest.mark.parametrize("asynchronous", MODES, ids=MODE_IDS)
def test_outputs_the_process_streamed_are_parts(served, asynchronous):
    # 3 MiB written through pygeoapi_prefect.outputs, sent back out of the store.
    body = {"inputs": {"megabytes": "3"}, "response": "raw"}
    answer = run(served, "stream", body, asynchronous=asynchronous)
    found = parts(answer)
    assert set(found) == {"data", "note"}
    assert found["data"].get_content_type() == "application/x-test"
    assert payload(found["data"]) == pattern(3)
    assert found["note"].get_content_type() == "text/plain"
    assert payload(found["note"]) == b"written by the process"
    assert int(answer.headers["content-length"]) == len(answer.content)


def test_a_document_is_still_a_results_document(served):
    answer = run(served, "multi", {"response": "document"}, asynchronous=False)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/json")
    validate(answer.json(), "results")
    assert answer.json()["numbers"] == [1, 2, 3]


def test_a_sync_job_not_recorded_yet_answers_multipart_from_memory(prefect_server, tmp_path):
    # Prefect unreachable when the job ends: no job id yet, so nothing is
    # stored yet either; the answer is made of the outputs in memory. (The
    # deferred record landing later: tests/test_sync_runtime.py.)
    from tcp_proxy import TcpProxy

    proxy = TcpProxy(prefect_server.port)
    server = start_server(
        "gunicorn",
        tmp_path,
        f"{proxy.url}/api",
        processes=PROCESSES,
        workers=1,
        manager={"api_timeout": 3, "heartbeat": {"install_automation": False}},
    )
    try:
        assert "location" in server.execute("multi", {}, response="raw").headers  # recorded
        proxy.cut()
        answer = server.execute("multi", {}, response="raw")
        assert "location" not in answer.headers  # its record waits for Prefect
        found = parts(answer)
        assert list(found) == ["text", "numbers", "blob"]
        assert payload(found["text"]) == b"hello" and payload(found["blob"]) == BLOB
        proxy.restore()  # a server stops faster with Prefect there to release its lease
    finally:
        server.stop()
        proxy.cut()
