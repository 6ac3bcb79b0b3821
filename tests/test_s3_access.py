"""An ``s3://`` input the result store's credentials may not read (issue 13, review item 3).

Real parts: moto's S3 server in a process of its own with IAM enforced
(``INITIAL_NO_AUTH_ACTION_COUNT``: the first requests set the scene, every
later one must be signed by a known user and be allowed by that user's
policy), a user whose policy allows its own bucket only, pygeoapi over HTTP
whose result store is that bucket with that user's credentials (given the
AWS way, in the server's environment), and the Prefect server. The other
bucket exists and holds the object: only the permission is missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from conftest import STANDARD_PROCESSES, Pygeoapi, start_pygeoapi
from ogc import validate
from test_inputs_by_reference import execute, seen

from pygeoapi_prefect.prefect.server import free_port

STORE_BUCKET = "store-bucket"
OTHER_BUCKET = "someone-elses-bucket"
DATA = b"\x00only the owner may read this\xff"
#: The requests made before IAM is enforced: exactly the set-up in `_set_up`.
SET_UP_REQUESTS = 7
OWN_BUCKET_ONLY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": "s3:*",
            "Resource": [f"arn:aws:s3:::{STORE_BUCKET}", f"arn:aws:s3:::{STORE_BUCKET}/*"],
        }
    ],
}


@dataclass
class IamS3:
    """moto's S3 with IAM enforced, and the store user's credentials."""

    endpoint: str
    key_id: str
    secret: str


def _client(service: str, endpoint: str, key_id: str = "set-up", secret: str = "set-up") -> Any:
    import boto3

    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
    )


def _set_up(endpoint: str) -> IamS3:
    # Each call is one request; SET_UP_REQUESTS counts them.
    iam, s3 = _client("iam", endpoint), _client("s3", endpoint)
    iam.create_user(UserName="store")
    iam.put_user_policy(
        UserName="store", PolicyName="own-bucket", PolicyDocument=json.dumps(OWN_BUCKET_ONLY)
    )
    key = iam.create_access_key(UserName="store")["AccessKey"]
    s3.create_bucket(Bucket=STORE_BUCKET)
    s3.create_bucket(Bucket=OTHER_BUCKET)
    s3.put_object(Bucket=OTHER_BUCKET, Key="inputs/data.bin", Body=DATA)
    s3.put_object(Bucket=STORE_BUCKET, Key="inputs/data.bin", Body=DATA)
    return IamS3(endpoint, key["AccessKeyId"], key["SecretAccessKey"])


@pytest.fixture(scope="module")
def iam_s3(tmp_path_factory) -> Iterator[IamS3]:
    from botocore.exceptions import ClientError

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(SET_UP_REQUESTS)}
    log = (tmp_path_factory.mktemp("moto-iam") / "moto.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{endpoint}/moto-api/", timeout=2)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("moto's server did not start") from None
                time.sleep(0.1)
        found = _set_up(endpoint)
        # Enforced from here on: unknown credentials are refused, and the
        # store's user reads its own bucket but not the other one.
        with pytest.raises(ClientError, match="InvalidAccessKeyId"):
            _client("s3", endpoint).list_buckets()
        user = _client("s3", endpoint, found.key_id, found.secret)
        assert user.get_object(Bucket=STORE_BUCKET, Key="inputs/data.bin")["Body"].read() == DATA
        with pytest.raises(ClientError, match="AccessDenied"):
            user.get_object(Bucket=OTHER_BUCKET, Key="inputs/data.bin")
        yield found
    finally:
        server.terminate()
        server.wait(10)
        log.close()


@pytest.fixture(scope="module")
def server(iam_s3, prefect_server, tmp_path_factory) -> Iterator[Pygeoapi]:
    started = start_pygeoapi(
        tmp_path_factory.mktemp("s3-access"),
        prefect_server.api_url,
        processes={**STANDARD_PROCESSES, "inspect": "reference_processes.InspectProcessor"},
        manager={
            "results": {
                "url": f"s3://{STORE_BUCKET}/jobs",
                "storage_options": {"client_kwargs": {"endpoint_url": iam_s3.endpoint}},
            }
        },
        env={
            "AWS_ACCESS_KEY_ID": iam_s3.key_id,
            "AWS_SECRET_ACCESS_KEY": iam_s3.secret,
            "AWS_DEFAULT_REGION": "us-east-1",
        },
    )
    yield started
    started.stop()


def _execute(server: Pygeoapi, bucket: str, *, asynchronous: bool) -> httpx.Response:
    return execute(server, _inputs(bucket), asynchronous=asynchronous)


def _inputs(bucket: str) -> dict[str, Any]:
    return {"blob": {"href": f"s3://{bucket}/inputs/data.bin"}}


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_the_stores_own_bucket_is_read(server, asynchronous):
    # The control: same server, same credentials, a bucket they may read.
    assert seen(server, _inputs(STORE_BUCKET), asynchronous=asynchronous)["blob"]["length"] == len(
        DATA
    )


def test_a_bucket_the_store_may_not_read_is_a_400_naming_the_input(server, iam_s3):
    answer = _execute(server, OTHER_BUCKET, asynchronous=False)
    assert answer.status_code == 400, answer.text
    document = answer.json()
    validate(document, "exception")
    assert document["code"] == "InvalidParameterValue"
    assert "input 'blob'" in document["description"]
    assert f"s3://{OTHER_BUCKET}/inputs/data.bin" in document["description"]
    assert "PermissionError" in document["description"]
    assert iam_s3.secret not in answer.text and iam_s3.key_id not in answer.text


def test_an_async_job_reading_it_fails_naming_the_input(server, iam_s3):
    answer = _execute(server, OTHER_BUCKET, asynchronous=True)
    assert answer.status_code == 201, answer.text
    job_id = answer.json()["jobID"]
    status = server.wait_for(job_id, "successful", "failed", timeout=60)
    validate(status, "statusInfo")
    assert status["status"] == "failed", status
    assert "input 'blob'" in status["message"] and "PermissionError" in status["message"]
    assert iam_s3.secret not in json.dumps(status)
    results = server.client.get(f"/jobs/{job_id}/results", params={"f": "json"})
    assert results.status_code == 400, results.text
    validate(results.json(), "exception")
    assert "input 'blob'" in results.json()["description"]
