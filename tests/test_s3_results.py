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
