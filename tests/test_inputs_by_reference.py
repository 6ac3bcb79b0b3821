"""Inputs given by reference (issue 13, items 1 and 5), and every hostile reference.

Real parts: the input files come from a real HTTP server on loopback
(tests/input_server.py; the destination rules refuse loopback, so the
config allows the host name ``localhost`` only, and every other spelling of
127.0.0.1 stays refused), from moto's S3 server and from a folder; pygeoapi
runs over HTTP with the Prefect server; the OGC schemas check each document.
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import s3fs
from conftest import STANDARD_PROCESSES, Pygeoapi, start_pygeoapi
from input_server import DATA, TIFF, InputServer
from ogc import validate

MAX_BYTES = 4096
TIMEOUT = 3


@pytest.fixture(scope="module")
def inputs() -> Iterator[InputServer]:
    server = InputServer(big=MAX_BYTES).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> Path:
    top = tmp_path_factory.mktemp("reference-files")
    root = top / "root"
    root.mkdir()
    (root / "inside.txt").write_text("a file below the root")
    (top / "secret.txt").write_text("outside the root")
    (root / "escape.txt").symlink_to(top / "secret.txt")
    return root


@pytest.fixture(scope="module")
def server(s3, prefect_server, tmp_path_factory, inputs, roots) -> Iterator[Pygeoapi]:
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3.endpoint})
    fs.pipe_file(f"{s3.bucket}/inputs/data.bin", DATA)
    processes: dict[str, Any] = {
        **STANDARD_PROCESSES,
        "inspect": "reference_processes.InspectProcessor",
        "inspect-links": {
            "name": "reference_processes.InspectProcessor",
            "inputs": {"cog": {"pass_reference": True}},
        },
    }
    started = start_pygeoapi(
        tmp_path_factory.mktemp("refs-inputs"),
        prefect_server.api_url,
        processes=processes,
        manager={
            "results": {"url": f"s3://{s3.bucket}/jobs", "storage_options": s3.storage_options},
            "references": {
                "allow": ["localhost"],
                "max_bytes": MAX_BYTES,
                "timeout": TIMEOUT,
                "file_roots": [str(roots)],
            },
        },
    )
    yield started
    started.stop()


def execute(server: Pygeoapi, inputs: dict[str, Any], *, asynchronous: bool) -> httpx.Response:
    body = {"inputs": inputs, "response": "raw"}
    validate(body, "execute")
    return server.execute("inspect", inputs, asynchronous=asynchronous, response="raw")


def seen(server: Pygeoapi, inputs: dict[str, Any], *, asynchronous: bool) -> dict[str, Any]:
    answer = execute(server, inputs, asynchronous=asynchronous)
    if asynchronous:
        assert answer.status_code == 201, answer.text
        job_id = answer.json()["jobID"]
        status = server.wait_for(job_id, "successful", "failed", timeout=60)
        assert status["status"] == "successful", status
        answer = server.client.get(f"/jobs/{job_id}/results", params={"f": "json"})
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()["value"]
    return result


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_each_kind_of_input_receives_what_it_wants(server, inputs, roots, s3, asynchronous):
    got = seen(
        server,
        {
            "text": {"href": inputs.url("/text.txt"), "type": "text/plain"},
            "blob": {"href": f"s3://{s3.bucket}/inputs/data.bin"},
            "doc": {"href": inputs.url("/doc.json"), "type": "application/json"},
            "cog": {"href": inputs.url("/cog.tif"), "type": "image/tiff"},
        },
        asynchronous=asynchronous,
    )
    assert got["text"] == {"type": "str", "value": "hello from a link"}
    assert got["blob"] == {"type": "bytes", "length": len(DATA), "sha256": sha(DATA)}
    assert got["doc"] == {"type": "dict", "value": {"n": 3}}
    assert got["cog"] == {"type": "bytes", "length": len(TIFF), "sha256": sha(TIFF)}

    from_file = seen(
        server, {"text": {"href": (roots / "inside.txt").as_uri()}}, asynchronous=asynchronous
    )
    assert from_file["text"] == {"type": "str", "value": "a file below the root"}


def test_a_process_can_take_links_as_they_are(server, inputs):
    before = inputs.hits["/cog.tif"]
    link = {"href": inputs.url("/cog.tif"), "type": "image/tiff"}
    answer = server.execute("inspect-links", {"cog": link, "text": "inline"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["value"]["cog"] == {"type": "dict", "value": link}
    assert inputs.hits["/cog.tif"] == before  # read by the process, by range, not by us


def _job_count(server: Pygeoapi) -> int:
    answer = server.client.get("/jobs", params={"processID": "inspect", "limit": 1, "f": "json"})
    return int(answer.json()["numberMatched"])


def _internal_hosts(port: int) -> list[str]:
    name = socket.gethostname()
    resolved = {info[4][0] for info in socket.getaddrinfo(name, port)}
    # The precondition of the "name that resolves internal" case, checked, not assumed.
    assert resolved <= {"127.0.0.1", "::1", "127.0.1.1"}, (name, resolved)
    return [
        "127.0.0.1",  # loopback
        "127.1",  # short form
        "2130706433",  # decimal
        "0x7f000001",  # hex
        "0177.0.0.1",  # octal
        "[::ffff:127.0.0.1]",  # IPv6-mapped
        "[::1]",
        name,  # a DNS name that resolves internal
    ]


def _refused_at_submission(
    server: Pygeoapi, inputs: dict[str, Any], name: str, *, asynchronous: bool
) -> dict[str, Any]:
    jobs_before = _job_count(server)
    answer = execute(server, inputs, asynchronous=asynchronous)
    assert answer.status_code == 400, answer.text
    document = answer.json()
    validate(document, "exception")
    assert f"input '{name}'" in document["description"], document
    assert "Location" not in answer.headers
    assert _job_count(server) == jobs_before  # no job exists
    return document


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_internal_destinations_are_refused_before_any_job(server, inputs, asynchronous):
    hosts = [*_internal_hosts(inputs.port)]
    for host in hosts:
        link = {"href": inputs.url("/internal-only", host=host), "type": "text/plain"}
        document = _refused_at_submission(server, {"text": link}, "text", asynchronous=asynchronous)
        assert "internal" in document["description"] or "resolved" in document["description"]
    for href in [
        "http://169.254.169.254/latest/meta-data/",  # link-local: cloud metadata
        "http://100.100.100.200/latest/meta-data/",  # shared address space: metadata
        "http://100.64.0.1/",  # shared address space
        "http://10.0.0.1/",  # private
        "http://[fe80::1]/",  # IPv6 link-local
        "gopher://localhost/x",  # not a scheme references take
    ]:
        _refused_at_submission(server, {"text": {"href": href}}, "text", asynchronous=asynchronous)
    assert inputs.hits["/internal-only"] == 0  # never read


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_files_outside_the_roots_are_refused(server, roots, asynchronous):
    for href in [
        "file:///etc/passwd",
        (roots.parent / "secret.txt").as_uri(),
        roots.as_uri() + "/../secret.txt",  # ..
        roots.as_uri() + "/%2e%2e/secret.txt",  # .. percent-encoded
        (roots / "escape.txt").as_uri(),  # a link leading out
        "file://otherhost/etc/passwd",
    ]:
        document = _refused_at_submission(
            server, {"text": {"href": href}}, "text", asynchronous=asynchronous
        )
        assert "outside the root" not in document["description"]


def _failed_job(server: Pygeoapi, inputs: dict[str, Any], name: str) -> str:
    answer = execute(server, inputs, asynchronous=True)
    assert answer.status_code == 201, answer.text
    status = server.wait_for(answer.json()["jobID"], "successful", "failed", timeout=60)
    validate(status, "statusInfo")
    assert status["status"] == "failed", status
    assert f"input '{name}'" in status["message"], status
    return str(status["message"])


READ_TIME = [
    # (inputs, the input named, words of the message)
    ({"blob": {"href": "/big"}}, "blob", "max_bytes"),
    ({"blob": {"href": "/big-chunked"}}, "blob", "max_bytes"),
    ({"text": {"href": "/slow"}}, "text", "timeout"),
    ({"cog": {"href": "/image.png", "type": "image/png"}}, "cog", "media type"),
    ({"cog": {"href": "/image.png"}}, "cog", "media type"),  # as served
    ({"doc": {"href": "/bad.json"}}, "doc", "schema"),
    ({"doc": {"href": "/garbage.json"}}, "doc", "JSON"),
    ({"text": {"href": "/missing"}}, "text", "404"),
    ({"text": {"href": "/redirect?to=INTERNAL"}}, "text", "internal"),
]


def _with_urls(case: dict[str, Any], inputs: InputServer) -> dict[str, Any]:
    internal = inputs.url("/internal-only", host="127.0.0.1")
    found = {}
    for name, link in case.items():
        href = inputs.url(link["href"].replace("INTERNAL", internal))
        found[name] = {**link, "href": href}
    return found


@pytest.mark.parametrize(("case", "name", "words"), READ_TIME, ids=[c[2] for c in READ_TIME])
def test_what_is_read_is_checked_sync_400(server, inputs, case, name, words):
    started = time.monotonic()
    document = _refused_at_submission(server, _with_urls(case, inputs), name, asynchronous=False)
    assert words in document["description"], document
    if words == "timeout":
        # The slow server sends a byte a second for a minute: the timeout held.
        assert time.monotonic() - started < 50
    assert inputs.hits["/internal-only"] == 0


@pytest.mark.parametrize(("case", "name", "words"), READ_TIME, ids=[c[2] for c in READ_TIME])
def test_what_is_read_is_checked_async_fails_the_job(server, inputs, case, name, words):
    message = _failed_job(server, _with_urls(case, inputs), name)
    assert words in message
    assert inputs.hits["/internal-only"] == 0


def test_an_unreadable_bucket_names_the_input(server):
    link = {"blob": {"href": "s3://no-such-bucket-here/inputs/data.bin"}}
    document = _refused_at_submission(server, link, "blob", asynchronous=False)
    assert "credentials" in document["description"]
    assert "credentials" in _failed_job(server, link, "blob")
    assert "AWS_SECRET_ACCESS_KEY" not in json.dumps(document)
