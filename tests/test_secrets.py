"""Secrets stay secret, and nothing read back from storage is unpickled.

One pygeoapi runs with its S3 credentials in the environment (the AWS way),
a Prefect API key in the environment, and a password in its PREFECT_API_URL,
logging at DEBUG. After jobs of every kind, none of the three appears in its
log, its answers, the flow runs in Prefect or the result store.
"""

from __future__ import annotations

import ast
import json
import pickle
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from conftest import ROOT, Pygeoapi, pygeoapi_config, server_env, spawn_serve, wait_serving

from pygeoapi_prefect.errors import ResultStoreError
from pygeoapi_prefect.jobs.results import ResultStore
from pygeoapi_prefect.prefect.server import free_port

ACCESS_KEY = "AKIAHOSTILETESTKEYID"
SECRET_KEY = "s3-secret-never-to-be-seen-0b1d"
PREFECT_KEY = "pnu_fake-prefect-key-never-to-be-seen"
URL_PASSWORD = "url-password-never-to-be-seen"
SECRETS = (ACCESS_KEY, SECRET_KEY, PREFECT_KEY, URL_PASSWORD)
PROCESSES: dict[str, str | dict[str, Any]] = {
    "hello-world": "HelloWorld",
    "fail": "pygeoapi_test_processes.FailProcessor",
    "bytes": "pygeoapi_test_processes.BytesProcessor",
}


def _leaks(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


@pytest.fixture(scope="module")
def guarded(prefect_server, s3, tmp_path_factory) -> Any:
    """pygeoapi on an S3 store, with every kind of secret in its environment."""
    tmp = tmp_path_factory.mktemp("secrets")
    port = free_port()
    prefix = f"s3://{s3.bucket}/secrets-{uuid.uuid4()}"
    api_url = prefect_server.api_url.replace("http://", f"http://pygeoapi:{URL_PASSWORD}@")
    config = pygeoapi_config(
        port,
        tmp / "unused",
        processes=PROCESSES,
        manager={"results": {"url": prefix, "storage_options": s3.storage_options}},
    )
    config["logging"] = {"level": "DEBUG"}
    config_path = tmp / "pygeoapi-config.yml"
    config_path.write_text(yaml.safe_dump(config))
    env = server_env(api_url, tmp / "prefect-home")
    env |= {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "PREFECT_API_KEY": PREFECT_KEY,
    }
    log_path = tmp / "pygeoapi.log"
    process = spawn_serve(config_path, port, tmp, env, log_path)
    server = Pygeoapi(f"http://127.0.0.1:{port}", config_path, tmp / "unused", process, log_path)
    server.store_prefix = prefix  # type: ignore[attr-defined]
    try:
        wait_serving(process, server.base_url, log_path, 90)
        yield server
    finally:
        server.stop()


def _fs(s3: Any) -> Any:
    import s3fs

    return s3fs.S3FileSystem(
        key="pygeoapi-prefect-test", secret="pygeoapi-prefect-test-secret", **s3.storage_options
    )


def test_no_secret_anywhere(guarded: Pygeoapi, prefect_api, s3) -> None:
    seen: list[str] = []

    def answer(response: httpx.Response) -> httpx.Response:
        seen.append(f"{response.request.method} {response.request.url} {response.status_code}")
        seen.append(json.dumps(dict(response.headers)))
        seen.append(response.text)
        return response

    sync = answer(guarded.execute("hello-world", {"name": "sync"}))
    assert sync.status_code == 200, sync.text
    job_ids = [sync.headers["Location"].rsplit("/", 1)[1]]
    queued = answer(guarded.execute("hello-world", {"name": "async"}, asynchronous=True))
    assert queued.status_code == 201, queued.text
    job_ids.append(queued.json()["jobID"])
    assert answer(guarded.execute("fail", {"what": "bad"})).status_code == 500
    failed = answer(guarded.execute("fail", {"what": "bad"}, asynchronous=True))
    job_ids.append(failed.json()["jobID"])
    guarded.wait_for(job_ids[1], "successful", timeout=60)
    guarded.wait_for(job_ids[2], "failed", timeout=60)
    for job_id in job_ids:
        answer(guarded.job(job_id))
        answer(guarded.client.get(f"/jobs/{job_id}/results", params={"f": "json"}))
    answer(guarded.client.get("/jobs", params={"f": "json", "limit": 50}))
    answer(guarded.client.get("/jobs", params={"f": "html"}))
    answer(guarded.client.get(f"/jobs/{job_ids[0]}", params={"f": "html"}))
    answer(guarded.client.get("/processes", params={"f": "json"}))
    answer(guarded.client.get("/openapi", params={"f": "json"}))
    answer(guarded.client.get("/jobs/not-a-job", params={"f": "json"}))
    assert "/runs/flow-run/" in sync.text or any("/runs/flow-run/" in text for text in seen)

    # The flow runs in Prefect: parameters, labels, tags, states, and logs.
    runs = prefect_api.filter_flow_runs(
        {"id": {"any_": job_ids}}, sort="EXPECTED_START_TIME_DESC", limit=10, offset=0
    )
    assert len(runs) == 3
    logs = httpx.post(
        f"{prefect_api.api_url}/logs/filter",
        json={"logs": {"flow_run_id": {"any_": job_ids}}, "limit": 200},
        timeout=30,
    ).json()

    # What the result store holds.
    fs = _fs(s3)
    stored = {
        path: fs.cat_file(path).decode("utf-8", "replace")
        for path in fs.find(guarded.store_prefix)  # type: ignore[attr-defined]
    }
    assert any(path.endswith("manifest.json") for path in stored)

    log = guarded.log_path.read_text(errors="replace")
    assert "DEBUG" in log  # the log is as talkative as it gets
    # botocore's own DEBUG lines show its signed headers, which carry the
    # access key ID (an identifier, not a secret, for AWS); never the key.
    ours = [line for line in log.splitlines() if "botocore" not in line]
    assert _leaks("\n".join(ours)) == []
    assert SECRET_KEY not in log and PREFECT_KEY not in log and URL_PASSWORD not in log
    assert _leaks("\n".join(seen)) == []
    assert _leaks(json.dumps(runs)) == []
    assert _leaks(json.dumps(logs)) == []
    assert _leaks(json.dumps(stored)) == []


@pytest.mark.parametrize(
    ("url", "options"),
    [
        ("s3://pygeoapi-no-such-bucket!/x", {}),
        ("s3://pygeoapi-no-such-bucket!/x", {"key": ACCESS_KEY, "secret": SECRET_KEY}),
        (f"s3://{ACCESS_KEY}:{SECRET_KEY}@pygeoapi-no-such-bucket!/x", {}),
    ],
    ids=["env", "storage-options", "in-the-url"],
)
def test_storage_errors_name_no_secret(s3, caplog, url: str, options: dict[str, Any]) -> None:
    store = ResultStore(url, {**s3.storage_options, **options})
    with pytest.raises(ResultStoreError) as caught:
        store.write(str(uuid.uuid4()), "application/json", {"a": 1})
    assert "pygeoapi-no-such-bucket" in caught.value.message
    assert _leaks(caught.value.message) == []
    assert _leaks(repr(store)) == []
    assert _leaks(caplog.text) == []


# -- nothing is unpickled ------------------------------------------------------


class _Marker:
    """Unpickling this creates a file: the proof that a pickle was loaded."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (Path(self.path),))


def _payload(marker: Path) -> bytes:
    # A live payload: loading the same thing for another path creates that file.
    probe = marker.with_name("probe")
    pickle.loads(pickle.dumps(_Marker(str(probe))))
    assert probe.exists()
    return pickle.dumps(_Marker(str(marker)))


@pytest.mark.parametrize(
    ("manifest", "served"),
    [
        ({"mimetype": "application/json", "encoding": "json"}, False),
        # A pickle is not UTF-8 text: its manifest lies, and the store says so.
        ({"mimetype": "text/plain", "encoding": "text"}, False),
        ({"mimetype": "application/python-pickle", "encoding": "pickle"}, False),
        ({"mimetype": "application/python-pickle", "encoding": "bytes"}, True),
    ],
    ids=["as-json", "as-text", "as-pickle", "as-bytes"],
)
def test_a_pickle_in_the_store_is_never_loaded(
    guarded: Pygeoapi, s3, tmp_path: Path, manifest: dict[str, str], served: bool
) -> None:
    response = guarded.execute("hello-world", {"name": "pickle"})
    assert response.status_code == 200
    job_id = response.headers["Location"].rsplit("/", 1)[1]
    marker = tmp_path / "unpickled"
    payload = _payload(marker)
    fs = _fs(s3)
    folder = f"{guarded.store_prefix}/{job_id}"  # type: ignore[attr-defined]
    fs.pipe_file(f"{folder}/output", payload)
    fs.pipe_file(
        f"{folder}/manifest.json",
        json.dumps({**manifest, "size": len(payload), "response": "raw"}).encode(),
    )
    results = guarded.client.get(f"/jobs/{job_id}/results", params={"f": "json"})
    if served:
        assert results.status_code == 200
        assert results.content == payload  # handed over as bytes, not loaded
    else:
        assert results.status_code == 503, results.text
        assert "corrupt" in results.json()["description"]
    assert not marker.exists()


def test_credentials_in_the_connection_url_are_a_config_error() -> None:
    from pygeoapi_prefect.errors import ConfigError
    from pygeoapi_prefect.manager import PrefectManager

    with pytest.raises(
        ConfigError, match=r"server\.manager\.connection: .*PREFECT_API_KEY"
    ) as caught:
        PrefectManager(
            {
                "name": "pygeoapi_prefect.manager.PrefectManager",
                "connection": f"http://user:{URL_PASSWORD}@127.0.0.1:4200/api",
            }
        )
    assert URL_PASSWORD not in str(caught.value)


def test_no_code_path_can_unpickle() -> None:
    # Our sources import no deserialiser that runs code, and never ask
    # Prefect for a persisted result (which it would unpickle).
    risky = {"pickle", "cloudpickle", "dill", "marshal", "shelve", "joblib"}
    for path in sorted((ROOT / "src" / "pygeoapi_prefect").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                names = {(node.module or "").split(".")[0]}
            elif isinstance(node, ast.Attribute) and node.attr in ("result", "aresult"):
                names = {"<state>.result"} if _is_state_result(node) else set()
            else:
                continue
            assert not names & (risky | {"<state>.result"}), f"{path}: {names}"


def _is_state_result(node: ast.Attribute) -> bool:
    # `state.result()` / `future.result()`: only futures of our own thread
    # pools (named *counting* or *future*) may be awaited that way.
    owner = node.value
    name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", "")
    return "state" in name.lower()


def test_deployed_flows_persist_no_results() -> None:
    from pygeoapi_prefect.examples.hi_prefect_world import hi_prefect_world
    from pygeoapi_prefect.execution.deployed import job_flow, process_flow

    flows = [
        process_flow("hello-world", {"processor": {"name": "HelloWorld"}}, results_url="/tmp/x"),
        job_flow(hi_prefect_world, process_id="hi-prefect-world", results_url="/tmp/x"),
    ]
    for flow in flows:
        assert flow.persist_result is False, flow.name
