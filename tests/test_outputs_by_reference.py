"""Outputs by reference, one output at a time, outputs a process streams (issue 13, items 2-4).

Real parts: a pygeoapi server over HTTP, the Prefect server, moto's S3 server
(presigned URLs downloaded by a plain HTTP client without credentials), and
the OGC 1.0 schemas checking every document.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import STANDARD_PROCESSES, Pygeoapi, start_pygeoapi
from ogc import validate
from reference_processes import BLOB, STREAMED_FLOW, pattern

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))  # the `bytes` process's output
PROCESSES = {
    **STANDARD_PROCESSES,
    "multi": "reference_processes.MultiProcessor",
    "stream": "reference_processes.StreamProcessor",
    "streamed-flow": STREAMED_FLOW,
}
LINK = re.compile(
    r'<(?P<href>[^>]*)>;\s*rel="(?P<rel>[^"]*)";\s*type="(?P<type>[^"]*)";\s*title="(?P<title>[^"]*)"'
)
RESULTS_REL = "http://www.opengis.net/def/rel/ogc/1.0/results"


@pytest.fixture(scope="module")
def on_s3(s3, prefect_server, tmp_path_factory) -> Iterator[Pygeoapi]:
    server = start_pygeoapi(
        tmp_path_factory.mktemp("refs-s3"),
        prefect_server.api_url,
        processes=PROCESSES,
        manager={
            "results": {
                "url": f"s3://{s3.bucket}/refs",
                "storage_options": s3.storage_options,
                "presign_seconds": 600,
            }
        },
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def on_disk(prefect_server, tmp_path_factory) -> Iterator[Pygeoapi]:
    server = start_pygeoapi(
        tmp_path_factory.mktemp("refs-disk"), prefect_server.api_url, processes=PROCESSES
    )
    yield server
    server.stop()


def run(
    server: Pygeoapi, process_id: str, body: dict[str, Any], *, asynchronous: bool
) -> httpx.Response:
    """The answer of a job: the sync execution's, or the async job's results."""
    validate(body, "execute")
    answer = server.execute(process_id, body.pop("inputs", {}), asynchronous=asynchronous, **body)
    if not asynchronous:
        return answer
    assert answer.status_code == 201, answer.text
    job_id = answer.json()["jobID"]
    server.wait_for(job_id, "successful", timeout=60)
    return server.client.get(f"/jobs/{job_id}/results")


def links(response: httpx.Response) -> list[dict[str, str]]:
    found = []
    for value in response.headers.get_list("link"):
        match = LINK.fullmatch(value.strip())
        if match and match["rel"] == RESULTS_REL:
            found.append(match.groupdict())
    return found


def download(href: str, base_url: str) -> httpx.Response:
    # No credentials, no session: what any client on the internet has.
    response = httpx.get(href if "://" in href else base_url + href, timeout=30)
    assert response.status_code == 200, response.text
    return response


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("mode", ["value", "reference"])
@pytest.mark.parametrize("response_mode", ["raw", "document"])
def test_every_combination_on_s3(on_s3, s3, asynchronous, mode, response_mode):
    body = {"outputs": {"result": {"transmissionMode": mode}}, "response": response_mode}
    answer = run(on_s3, "bytes", body, asynchronous=asynchronous)
    if response_mode == "raw" and mode == "value":
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "image/png"
        assert answer.content == PNG
    elif response_mode == "raw":
        # /req/core/process-execute-sync-raw-ref, /req/core/job-results-async-raw-ref
        assert answer.status_code == 204, answer.text
        assert answer.content == b""
        (link,) = links(answer)
        assert link["type"] == "image/png" and link["title"] == "result"
        assert link["href"].startswith(s3.endpoint) and "Signature" in link["href"]
        assert download(link["href"], on_s3.base_url).content == PNG
    else:
        assert answer.status_code == 200
        document = answer.json()
        validate(document, "results")
        if mode == "value":
            assert document == {
                "result": {
                    "value": base64.b64encode(PNG).decode(),
                    "encoding": "base64",
                    "mediaType": "image/png",
                }
            }
        else:
            assert set(document) == {"result"} and document["result"]["type"] == "image/png"
            href = document["result"]["href"]
            assert href.startswith(s3.endpoint)
            assert download(href, on_s3.base_url).content == PNG


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_references_without_signing_link_to_pygeoapi(on_disk, asynchronous):
    body = {"outputs": {"result": {"transmissionMode": "reference"}}, "response": "raw"}
    answer = run(on_disk, "bytes", body, asynchronous=asynchronous)
    assert answer.status_code == 204
    (link,) = links(answer)
    assert re.fullmatch(rf"{on_disk.base_url}/jobs/[0-9a-f-]{{36}}/results/result", link["href"])
    got = download(link["href"], on_disk.base_url)
    assert got.content == PNG and got.headers["content-type"] == "image/png"

    body = {"outputs": {"result": {"transmissionMode": "reference"}}, "response": "document"}
    document = run(on_disk, "bytes", body, asynchronous=asynchronous).json()
    validate(document, "results")
    assert download(document["result"]["href"], on_disk.base_url).content == PNG


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_multi_output_document_maps_each_output(on_s3, asynchronous):
    body = {
        "response": "document",
        "outputs": {
            "text": {"transmissionMode": "value"},
            "numbers": {"transmissionMode": "reference"},
            "blob": {"transmissionMode": "reference"},
        },
    }
    document = run(on_s3, "multi", body, asynchronous=asynchronous).json()
    validate(document, "results")
    assert document["text"] == "hello"
    assert document["numbers"]["type"] == "application/json"
    assert download(document["numbers"]["href"], on_s3.base_url).json() == [1, 2, 3]
    assert document["blob"]["type"] == "image/png"
    assert download(document["blob"]["href"], on_s3.base_url).content == BLOB

    everything = run(on_s3, "multi", {"response": "document"}, asynchronous=asynchronous).json()
    validate(everything, "results")
    assert everything["text"] == "hello" and everything["numbers"] == [1, 2, 3]
    assert base64.b64decode(everything["blob"]["value"]) == BLOB


def _multipart(response: httpx.Response) -> list[Any]:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: "
        + response.headers["content-type"].encode()
        + b"\r\n\r\n"
        + response.content
    )
    return list(message.iter_parts())


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_raw_mixed_outputs_are_multipart(on_disk, asynchronous):
    # /req/core/process-execute-sync-raw-mixed-multi
    body = {
        "response": "raw",
        "outputs": {
            "text": {"transmissionMode": "value"},
            "blob": {"transmissionMode": "reference"},
        },
    }
    answer = run(on_disk, "multi", body, asynchronous=asynchronous)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("multipart/related")
    text, blob = _multipart(answer)
    assert text["Content-ID"] == "<text>" and text.get_payload(decode=True) == b"hello"
    assert blob["Content-ID"] == "<blob>" and blob.get_payload(decode=True) == b""
    assert download(blob["Content-Location"], on_disk.base_url).content == BLOB


def test_one_output_at_a_time(on_disk):
    job_id = on_disk.execute("multi", {}, asynchronous=True).json()["jobID"]
    on_disk.wait_for(job_id, "successful")
    text = on_disk.client.get(f"/jobs/{job_id}/results/text")
    assert text.status_code == 200
    assert text.headers["content-type"] == "text/plain" and text.text == "hello"
    numbers = on_disk.client.get(f"/jobs/{job_id}/results/numbers")
    assert numbers.headers["content-type"] == "application/json" and numbers.json() == [1, 2, 3]
    blob = on_disk.client.get(f"/jobs/{job_id}/results/blob")
    assert blob.headers["content-type"] == "image/png" and blob.content == BLOB
    assert blob.headers["content-length"] == str(len(BLOB))

    for path, code in [
        (f"/jobs/{job_id}/results/nope", "NoSuchOutput"),
        ("/jobs/00000000-0000-4000-8000-000000000000/results/text", "NoSuchJob"),
        ("/jobs/not-a-job/results/text", "NoSuchJob"),
    ]:
        missing = on_disk.client.get(path)
        assert missing.status_code == 404, path
        validate(missing.json(), "exception")
        assert missing.json()["code"] == code

    running = on_disk.execute("sleep", {"seconds": 30}, asynchronous=True).json()["jobID"]
    not_ready = on_disk.client.get(f"/jobs/{running}/results/result")
    assert not_ready.status_code == 404 and not_ready.json()["code"] == "ResultNotReady"
    on_disk.client.delete(f"/jobs/{running}")


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_streamed_outputs(on_s3, asynchronous):
    body = {
        "inputs": {"megabytes": "3"},
        "response": "raw",
        "outputs": {"data": {"transmissionMode": "reference"}},
    }
    answer = run(on_s3, "stream", body, asynchronous=asynchronous)
    assert answer.status_code == 204
    (link,) = links(answer)
    assert link["title"] == "data" and link["type"] == "application/x-test"
    assert download(link["href"], on_s3.base_url).content == pattern(3)

    job = answer.headers["location"] if not asynchronous else None
    document = run(
        on_s3,
        "stream",
        {"inputs": {"megabytes": "1"}, "response": "document"},
        asynchronous=asynchronous,
    ).json()
    validate(document, "results")
    assert document["note"] == "written by the process"
    assert base64.b64decode(document["data"]["value"]) == pattern(1)
    if job is not None:
        got = on_s3.client.get(f"{job}/results/note")
        assert got.headers["content-type"] == "text/plain" and got.text == "written by the process"


def test_invalid_transmission_mode_is_a_400(on_disk):
    answer = on_disk.execute("bytes", {}, outputs={"result": {"transmissionMode": "telepathy"}})
    assert answer.status_code == 400
    validate(answer.json(), "exception")
    assert "transmissionMode" in answer.json()["description"]


def test_descriptions_offer_reference(on_disk):
    description = on_disk.client.get("/processes/bytes", params={"f": "json"}).json()
    validate(description, "process")
    assert description["outputTransmission"] == ["value", "reference"]
    listed = on_disk.client.get("/processes", params={"f": "json"}).json()
    validate(listed, "processList")
    assert all("reference" in p["outputTransmission"] for p in listed["processes"])


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_a_prefect_flow_streams_its_outputs(on_disk, asynchronous):
    # A Prefect flow published as a process (FlowProcessor), run here.
    answer = on_disk.execute(
        "streamed-flow",
        {"megabytes": 2, "greeting": "hi"},
        asynchronous=asynchronous,
        response="document",
        outputs={"data": {"transmissionMode": "reference"}, "greeting": {}},
    )
    if asynchronous:
        job_id = answer.json()["jobID"]
        on_disk.wait_for(job_id, "successful", timeout=60)
        answer = on_disk.client.get(f"/jobs/{job_id}/results")
    assert answer.status_code == 200, answer.text
    document = answer.json()
    validate(document, "results")
    assert document["greeting"] == "hi"
    assert download(document["data"]["href"], on_disk.base_url).content == pattern(2)


def test_the_openapi_document_has_the_one_output_route(on_disk):
    document = on_disk.client.get("/openapi", params={"f": "json"}).json()
    operation = document["paths"]["/jobs/{jobId}/results/{outputId}"]["get"]
    assert {p["name"] for p in operation["parameters"]} == {"jobId", "outputId"}
