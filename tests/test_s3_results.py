"""A result store on S3 (moto's S3 server on loopback), credentials from the environment."""

from __future__ import annotations

import json

import s3fs
from conftest import S3_ENV


def test_jobs_write_and_read_results_on_s3(s3, pygeoapi_factory):
    server = pygeoapi_factory(
        manager={
            "results": {"url": f"s3://{s3.bucket}/jobs", "storage_options": s3.storage_options}
        }
    )
    # Credentials reach pygeoapi the standard AWS way, never through its YAML.
    assert S3_ENV["AWS_SECRET_ACCESS_KEY"] not in server.config_path.read_text()

    job_id = server.execute("hello-world", {"name": "S3"}, asynchronous=True).json()["jobID"]
    status = server.wait_for(job_id, "successful")
    results = server.client.get(f"/jobs/{job_id}/results", params={"f": "json"})
    assert results.json() == {"id": "echo", "value": "Hello S3!"}

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3.endpoint})
    manifest = json.loads(fs.cat_file(f"{s3.bucket}/jobs/{job_id}/manifest.json"))
    assert manifest["encoding"] == "json"

    sync = server.execute("bytes", {})
    assert sync.status_code == 200
    sync_id = sync.headers["Location"].rsplit("/", 1)[-1]
    assert fs.cat_file(f"{s3.bucket}/jobs/{sync_id}/output") == sync.content

    assert server.client.delete(f"/jobs/{job_id}").status_code == 200
    fs.invalidate_cache()
    assert not fs.exists(f"{s3.bucket}/jobs/{job_id}/manifest.json")

    secret = S3_ENV["AWS_SECRET_ACCESS_KEY"]
    assert secret not in json.dumps(status)
    assert secret not in server.log_path.read_text()


def test_result_store_from_a_prefect_block(s3, prefect_server, pygeoapi_factory):
    """Credentials in a Prefect block; the pygeoapi config only names the block."""
    from prefect.filesystems import RemoteFileSystem
    from prefect.settings import PREFECT_API_URL, temporary_settings

    # _sync: run sync even if an event loop runs in this thread (Prefect's
    # save would return a coroutine there).
    with temporary_settings(updates={PREFECT_API_URL: prefect_server.api_url}):
        RemoteFileSystem(
            basepath=f"s3://{s3.bucket}/from-block",
            settings={
                "key": S3_ENV["AWS_ACCESS_KEY_ID"],
                "secret": S3_ENV["AWS_SECRET_ACCESS_KEY"],
                "client_kwargs": {"endpoint_url": s3.endpoint},
            },
        ).save("results-store", overwrite=True, _sync=True)
    server = pygeoapi_factory(manager={"results": {"block": "remote-file-system/results-store"}})
    assert "secret" not in server.config_path.read_text()
    job_id = server.execute("hello-world", {"name": "block"}, asynchronous=True).json()["jobID"]
    server.wait_for(job_id, "successful")
    results = server.client.get(f"/jobs/{job_id}/results", params={"f": "json"})
    assert results.json() == {"id": "echo", "value": "Hello block!"}
    sync_id = server.execute("hello-world", {"name": "b"}).headers["Location"].rsplit("/", 1)[-1]
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3.endpoint})
    assert fs.exists(f"{s3.bucket}/from-block/{job_id}/output")
    assert fs.exists(f"{s3.bucket}/from-block/{sync_id}/output")
