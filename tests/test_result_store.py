"""One contract for the result store, run over local and in-memory filesystems."""

from __future__ import annotations

import uuid

import pytest

from pygeoapi_prefect.errors import ResultNotFound
from pygeoapi_prefect.jobs.results import ResultStore


@pytest.fixture(params=["file", "memory", "s3"])
def store(request, tmp_path):
    if request.param == "file":
        return ResultStore(tmp_path.as_uri())
    if request.param == "s3":
        s3 = request.getfixturevalue("s3")
        return ResultStore(f"s3://{s3.bucket}/results-{uuid.uuid4()}", s3.storage_options)
    return ResultStore(f"memory://results-{uuid.uuid4()}")


@pytest.mark.parametrize(
    ("mimetype", "value"),
    [
        ("application/json", {"id": "echo", "value": "hi"}),
        ("application/json", [1, 2, {"a": None}]),
        ("text/plain", "plain text é"),
        ("image/png", b"\x89PNG\x00\xff"),
    ],
)
def test_round_trip(store, mimetype, value):
    job_id = str(uuid.uuid4())
    manifest = store.write(job_id, mimetype, value, response="document", output_ids=("echo",))
    read_manifest, read_value = store.read(job_id)
    assert read_manifest == manifest
    assert read_value == value
    assert read_manifest.output_ids == ("echo",)
    assert store.exists(job_id)


def test_missing_results(store):
    job_id = str(uuid.uuid4())
    assert not store.exists(job_id)
    with pytest.raises(ResultNotFound):
        store.read(job_id)


def test_delete(store):
    job_id = str(uuid.uuid4())
    store.write(job_id, "application/json", {"a": 1})
    store.delete(job_id)
    store.delete(job_id)  # deleting twice is fine
    assert not store.exists(job_id)


@pytest.mark.parametrize("bad", ["../escape", "/etc/passwd", "a/../../b", "", "X" * 36])
def test_job_ids_cannot_leave_the_store(tmp_path, bad):
    store = ResultStore((tmp_path / "store").as_uri())
    with pytest.raises(ResultNotFound):
        store.write(bad, "application/json", {"a": 1})
    with pytest.raises(ResultNotFound):
        store.read(bad)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "value",
    [
        bytes(range(256)) * 4096 * 24,  # 24 MiB of bytes
        ["x" * 1000] * 24_000,  # about 24 MB of JSON
        "y" * (24 * 1024 * 1024),  # 24 MiB of text
    ],
    ids=["bytes", "json", "text"],
)
def test_large_outputs_are_written_without_a_second_copy(tmp_path, value):
    import tracemalloc

    store = ResultStore(tmp_path.as_uri())
    job_id = str(uuid.uuid4())
    tracemalloc.start()
    try:
        manifest = store.write(job_id, "application/octet-stream", value)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert manifest.size > 20 * 1024 * 1024
    assert peak < 8 * 1024 * 1024, f"writing used {peak / 2**20:.1f} MiB"
    chunks = list(store.iter_output(job_id))
    assert max(len(chunk) for chunk in chunks) <= 1024 * 1024
    assert sum(len(chunk) for chunk in chunks) == manifest.size
