"""The result store's outputs one by one, their manifest, and what answers are made of them.

A real store on disk (fsspec's local filesystem): no mock of it.
"""

from __future__ import annotations

import json
import uuid

import pytest

from pygeoapi_prefect.errors import InvalidInputs, NoSuchOutput, ResultStoreError
from pygeoapi_prefect.jobs.answers import Links, output_answer, results_answer, transmission
from pygeoapi_prefect.jobs.results import ResultStore, part_name


@pytest.fixture
def store(tmp_path):
    return ResultStore(tmp_path.as_uri())


def test_each_output_is_its_own_object(store, tmp_path):
    job_id = str(uuid.uuid4())
    manifest = store.write(
        job_id,
        "image/png",
        {"text": "hello", "numbers": [1, 2], "blob": b"\x00\x01"},
        output_ids=("text", "numbers", "blob"),
        media_types={"text": "text/plain", "numbers": "application/json"},
        references=("blob",),
    )
    assert {p.output_id: p.mimetype for p in manifest.parts} == {
        "text": "text/plain",
        "numbers": "application/json",
        "blob": "image/png",
    }
    assert (tmp_path / job_id / "outputs" / "blob").read_bytes() == b"\x00\x01"
    assert store.read_manifest(job_id) == manifest
    one = output_answer(store, job_id, manifest, "numbers")
    assert one.mimetype == "application/json" and json.loads(b"".join(one.body)) == [1, 2]
    with pytest.raises(NoSuchOutput):
        output_answer(store, job_id, manifest, "nope")


def test_odd_output_ids_never_leave_the_job(store, tmp_path):
    for output_id in ["../../etc/passwd", "..", ".", "a/b", "x" * 500, "é"]:
        name = part_name(output_id)
        assert name.startswith("outputs/") and "/" not in name[len("outputs/") :]
        assert ".." not in name
    job_id = str(uuid.uuid4())
    with store.open_output(job_id, "../../escape", "text/plain") as sink:
        sink.write(b"inside")
    assert not (tmp_path.parent / "escape").exists()
    assert list((tmp_path / job_id / "outputs").iterdir())[0].read_bytes() == b"inside"


def test_a_manifest_cannot_point_outside_its_job(store, tmp_path):
    job_id = str(uuid.uuid4())
    store.write(job_id, "text/plain", "ok")
    path = tmp_path / job_id / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["parts"][0]["name"] = "../other/output"
    path.write_text(json.dumps(manifest))
    with pytest.raises(ResultStoreError):
        store.read_manifest(job_id)


def test_a_failed_output_is_no_output(store, tmp_path):
    job_id = str(uuid.uuid4())
    written = []
    with pytest.raises(RuntimeError, match="the process broke"):
        with store.open_output(job_id, "data", "application/x-test", on_close=written.append):
            raise RuntimeError("the process broke")
    assert written == []
    assert not (tmp_path / job_id / "outputs" / "data").exists()


def test_links_on_a_store_that_cannot_sign(store):
    job_id = str(uuid.uuid4())
    manifest = store.write(job_id, "image/png", b"png", output_ids=("img",), references=("img",))
    links = Links(store, job_id, job_id, "https://example.test/jobs", 60)
    answer = results_answer(store, job_id, manifest, links)
    assert answer is not None and answer.status == 204
    assert answer.links == [
        f"<https://example.test/jobs/{job_id}/results/img>; "
        'rel="http://www.opengis.net/def/rel/ogc/1.0/results"; type="image/png"; title="img"'
    ]


def test_transmission_modes():
    assert transmission(None) == ((), ())
    assert transmission({"a": {}, "b": {"transmissionMode": "reference"}}) == (("a", "b"), ("b",))
    with pytest.raises(InvalidInputs, match="output 'a'"):
        transmission({"a": {"transmissionMode": "later"}})


def _parsed(answer) -> list:
    import email.parser
    import email.policy

    body = answer.body if isinstance(answer.body, bytes) else b"".join(answer.body)
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + answer.mimetype.encode() + b"\r\n\r\n" + body
    )
    assert message.get_content_type() == "multipart/related"
    return list(message.iter_parts())


def test_a_raw_map_of_outputs_is_multipart_streamed_a_chunk_at_a_time(store):
    from pygeoapi_prefect.jobs.results import CHUNK

    job_id = str(uuid.uuid4())
    big = bytes(range(256)) * (3 * CHUNK // 256)  # 3 MiB
    manifest = store.write(
        job_id,
        "image/png",
        {"text": "hello", "big": big},
        output_ids=("text", "big"),
        media_types={"text": "text/plain"},
    )
    assert manifest.whole  # one map returned by the process, stored output by output
    links = Links(store, job_id, job_id, None, 60)
    answer = results_answer(store, job_id, manifest, links)
    assert answer is not None and answer.status == 200 and answer.links == []
    chunks = list(answer.body)
    # Never the whole big output in one piece: it is read from the store in chunks.
    assert max(len(chunk) for chunk in chunks) <= CHUNK
    assert answer.size == sum(len(chunk) for chunk in chunks)
    answer.body = b"".join(chunks)
    text, got = _parsed(answer)
    assert text["Content-ID"] == "<text>" and text.get_payload(decode=True) == b"hello"
    assert got["Content-ID"] == "<big>" and got.get_content_type() == "image/png"
    assert got.get_payload(decode=True) == big


def test_odd_output_ids_cannot_break_a_header(store):
    job_id = str(uuid.uuid4())
    odd = "a\r\nX-Injected: 1"
    manifest = store.write(
        job_id,
        "text/plain",
        {odd: "one", "é": "two", "plain": "three"},
        output_ids=(odd, "é", "plain"),
        references=("é",),
    )
    links = Links(store, job_id, job_id, "https://example.test/jobs", 60)
    answer = results_answer(store, job_id, manifest, links)
    assert answer is not None and answer.status == 200
    (link,) = answer.links
    assert link.isascii() and "\r" not in link and "\n" not in link
    assert 'title="%C3%A9"' in link and "title*=UTF-8''%C3%A9" in link
    first, accented, plain = _parsed(answer)
    assert first["X-Injected"] is None
    assert first["Content-ID"] == "<a%0D%0AX-Injected%3A%201>"
    assert first.get_payload(decode=True) == b"one"
    assert accented["Content-ID"] == "<%C3%A9>" and accented.get_payload(decode=True) == b""
    assert accented["Content-Location"] == f"https://example.test/jobs/{job_id}/results/%C3%A9"
    assert plain.get_payload(decode=True) == b"three"


def test_outputs_in_memory_are_multipart_too():
    # A sync job whose record (and store write) waits for Prefect answers from memory.
    from pygeoapi_prefect.jobs.answers import values_answer

    outputs = {"text": "hello", "numbers": [1, 2], "blob": b"\x00\xff"}
    ids = ("text", "numbers", "blob")
    answer = values_answer(outputs, "image/png", ids, {"text": "text/plain"})
    assert answer is not None and answer.mimetype.startswith("multipart/related;")
    assert 'type="text/plain"' in answer.mimetype
    got = {
        p["Content-ID"]: (p.get_content_type(), p.get_payload(decode=True)) for p in _parsed(answer)
    }
    assert got == {
        "<text>": ("text/plain", b"hello"),
        "<numbers>": ("application/json", b"[1,2]"),
        "<blob>": ("image/png", b"\x00\xff"),
    }
    assert values_answer(outputs, "image/png", ids, {}, ("blob", "text")) is not None
    assert values_answer(outputs, "image/png", ids, {}, ("blob",)) is None
    assert values_answer({"id": "x", "value": 1}, "application/json", ("x",), {}) is None


def test_one_output_named_of_several_answers_by_itself(store):
    from pygeoapi_prefect.jobs.answers import one_of_several

    outputs = {"text": "hello", "blob": b"\x00\xff"}
    ids = ("text", "blob")
    assert one_of_several(outputs, "image/png", ids, {}, ("blob",)) == ("image/png", b"\x00\xff")
    assert one_of_several(outputs, "image/png", ids, {}, ("text", "blob")) is None
    assert one_of_several({"id": "x", "value": 1}, "application/json", ("x",), {}, ("x",)) is None

    job_id = str(uuid.uuid4())
    manifest = store.write(job_id, "image/png", outputs, output_ids=ids, requested=("blob",))
    answer = results_answer(store, job_id, manifest, Links(store, job_id, job_id, None, 60))
    assert answer is not None and answer.mimetype == "image/png"
    assert b"".join(answer.body) == b"\x00\xff"


def test_a_json_map_is_left_to_pygeoapi_only_with_as_map(store):
    # results.raw_several: json (as_map): the stored map is pygeoapi's to answer.
    from pygeoapi_prefect.jobs.answers import is_json_map, values_map

    ids = ("text", "numbers")
    outputs = {"text": "hello", "numbers": [1, 2]}
    job_id = str(uuid.uuid4())
    manifest = store.write(job_id, "application/json", outputs, output_ids=ids)
    links = Links(store, job_id, job_id, None, 60)
    assert is_json_map(manifest) and values_map(outputs, "application/json", ids, {})
    assert results_answer(store, job_id, manifest, links, as_map=True) is None
    assert store.read(job_id)[1] == outputs  # what pygeoapi is handed
    default = results_answer(store, job_id, manifest, links)
    assert default is not None and str(default.mimetype).startswith("multipart/related;")

    # No JSON map: bytes among the outputs, or one asked for by reference.
    with_bytes = {"text": "hello", "numbers": b"\x00"}
    assert not values_map(with_bytes, "application/json", ids, {})
    job_id = str(uuid.uuid4())
    manifest = store.write(job_id, "application/json", with_bytes, output_ids=ids)
    assert not is_json_map(manifest)
    links = Links(store, job_id, job_id, None, 60)
    answer = results_answer(store, job_id, manifest, links, as_map=True)
    assert answer is not None and str(answer.mimetype).startswith("multipart/related;")
    job_id = str(uuid.uuid4())
    manifest = store.write(
        job_id, "application/json", outputs, output_ids=ids, references=("numbers",)
    )
    assert not is_json_map(manifest)
    # A map the process said is another media type is no JSON map either.
    assert not values_map(outputs, "image/png", ids, {})
    job_id = str(uuid.uuid4())
    assert not is_json_map(store.write(job_id, "image/png", outputs, output_ids=ids))
    # One output is no map of several.
    assert not values_map({"text": "hello"}, "application/json", ("text",), {})
