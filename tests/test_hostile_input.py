"""Hostile input: fuzzing from the OpenAPI document, and requests built to hurt.

Every answer is a 4xx with an OGC exception document, never a 5xx, and
nothing outside the result store is read, written or deleted: on
``pygeoapi-prefect serve``, on gunicorn with the Flask app and on uvicorn
with the Starlette app (tests/servers.py).
"""

from __future__ import annotations

import json
import re
import uuid
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from conftest import TESTS, Pygeoapi, start_pygeoapi
from ogc import validate
from servers import start_server

from pygeoapi_prefect.config import LimitsConfig
from pygeoapi_prefect.errors import ResultNotFound
from pygeoapi_prefect.execution.callbacks import CallbackPolicy
from pygeoapi_prefect.jobs.results import ResultStore

#: No process that always fails: its sync execution is the server's failure
#: (500, with the failed job's Location; tests/test_errors.py), not bad input.
PROCESSES: dict[str, str | dict[str, Any]] = {
    "hello-world": "HelloWorld",
    "bytes": "pygeoapi_test_processes.BytesProcessor",
}
#: Small, so that the 413 test sends little; the default is checked apart.
MAX_BYTES = 256 * 1024
SECRET = "TOP-SECRET-OUTSIDE-THE-STORE"


@pytest.fixture(scope="module", params=["serve", "gunicorn", "uvicorn"])
def hostile(request, prefect_server, tmp_path_factory) -> Any:
    """A pygeoapi with quick processes only, and a sentinel beside its result store."""
    tmp = tmp_path_factory.mktemp(f"hostile-{request.param}")
    start = start_pygeoapi if request.param == "serve" else partial(start_server, request.param)
    server = start(
        tmp,
        prefect_server.api_url,
        processes=PROCESSES,
        manager={"limits": {"max_request_bytes": MAX_BYTES}},
    )
    # What a path traversal would find: a job-like folder next to the store.
    outside = tmp / "outside"
    outside.mkdir()
    (outside / "output").write_text(json.dumps({"id": "x", "value": SECRET}))
    (outside / "manifest.json").write_text(
        json.dumps({"mimetype": "application/json", "encoding": "json", "size": 9})
    )
    try:
        yield server
    finally:
        server.stop()


def _content_type(response: Any) -> str:
    found = response.headers.get("content-type") or ""
    return found[0] if isinstance(found, list) else found  # schemathesis: lists


def _is_ogc_exception(response: Any) -> None:
    # JSON, or JSON-LD when f=jsonld was asked for.
    assert _content_type(response).split(";")[0] in (
        "application/json",
        "application/ld+json",
    ), response.text[:300]
    document = json.loads(response.content)
    validate(document, "exception")
    assert isinstance(document["type"], str) and document["type"]
    assert document.get("title") or document.get("detail") or document.get("description")


# -- schemathesis, from the OpenAPI document the server serves -----------------

_REMOTE_SCHEMAS = "https://schemas.opengis.net/ogcapi/processes/part1/1.0/openapi/schemas/"
_LOCAL_SCHEMAS = TESTS / "data" / "ogc-schemas-part1-1.0" / "core" / "openapi" / "schemas"
#: Callback URIs the fuzzer may send: loopback (refused, 400), and never a
#: random host name, which would be looked up in DNS.
_CALLBACKS = {"type": "string", "enum": ["http://127.0.0.1:9/cb", "http://[::1]:9/cb"]}


def _offline(node: Any) -> Any:
    # The document refers to schemas.opengis.net; the tests have no network:
    # schemas come from the local copies, remote responses become plain ones.
    if isinstance(node, list):
        return [_offline(item) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith(_REMOTE_SCHEMAS):
        name = ref.removeprefix(_REMOTE_SCHEMAS)
        if name == "execute.yaml":
            return _execute_schema()
        return {"$ref": (_LOCAL_SCHEMAS / name).as_uri()}
    if isinstance(ref, str) and ref.startswith("http"):
        return {"description": f"see {ref}"}
    return {key: _offline(value) for key, value in node.items()}


def _execute_schema() -> dict[str, Any]:
    import yaml

    schema = yaml.safe_load((_LOCAL_SCHEMAS / "execute.yaml").read_text())
    inline = (_LOCAL_SCHEMAS / "inlineOrRefData.yaml").as_uri()
    schema["properties"]["inputs"]["additionalProperties"] = {
        "oneOf": [{"$ref": inline}, {"type": "array", "items": {"$ref": inline}}]
    }
    schema["properties"]["outputs"]["additionalProperties"] = {
        "$ref": (_LOCAL_SCHEMAS / "output.yaml").as_uri()
    }
    schema["properties"]["subscriber"] = {
        "type": "object",
        "required": ["successUri"],
        "properties": {key: _CALLBACKS for key in ("successUri", "inProgressUri", "failedUri")},
    }
    schema["properties"]["response"] = {"type": "string", "enum": ["raw", "document"]}
    return schema


def _fuzzed_paths(path: str) -> bool:
    return path.startswith(("/processes", "/jobs"))


def test_schemathesis_finds_no_server_error(hostile: Pygeoapi) -> None:
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    document = hostile.client.get("/openapi", params={"f": "json"}).json()
    document["paths"] = {
        path: _offline(item) for path, item in document["paths"].items() if _fuzzed_paths(path)
    }
    document["components"] = _offline(document.get("components", {}))
    schema = schemathesis.openapi.from_dict(document)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {
        "/processes",
        "/processes/hello-world",
        "/processes/hello-world/execution",
        "/jobs",
        "/jobs/{jobId}",
        "/jobs/{jobId}/results",
    }
    answered: dict[int, int] = {}

    def check(case: Any) -> None:
        response = case.call(base_url=hostile.base_url, timeout=30)
        answered[response.status_code] = answered.get(response.status_code, 0) + 1
        where = f"{case.method} {case.formatted_path} {case.query} {case.body!r:.300}"
        assert response.status_code < 500, f"{where}: {response.text[:500]}"
        if response.status_code >= 400:
            if (case.query or {}).get("f") == "html":
                assert _content_type(response).startswith("text/html"), where
            else:
                try:
                    _is_ogc_exception(response)
                except AssertionError as exc:
                    raise AssertionError(f"{where}: {exc}") from exc

    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            examples = 10 if operation.method.upper() == "POST" else 5

            @settings(
                max_examples=examples,
                derandomize=True,
                database=None,
                deadline=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def fuzz(case: Any) -> None:
                check(case)

            try:
                fuzz()
            except Unsatisfiable:
                # Nothing of this operation can be made invalid (GET /jobs
                # declares no parameters): its positive cases ran.
                assert mode is GenerationMode.NEGATIVE
    assert sum(answered.values()) > 60
    assert {400, 404} <= set(answered), answered


# -- request bodies ---------------------------------------------------------------


def _post(server: Pygeoapi, body: Any, **kwargs: Any) -> Any:
    return server.client.post(
        "/processes/hello-world/execution",
        content=body,
        headers={"Content-Type": "application/json"},
        **kwargs,
    )


def test_default_request_limit_is_sane() -> None:
    limits = LimitsConfig()
    assert 1024 * 1024 <= limits.max_request_bytes <= 64 * 1024 * 1024
    assert 16 <= limits.max_json_depth <= 200


def test_huge_bodies_are_413_naming_the_key(hostile: Pygeoapi) -> None:
    body = b'{"inputs": {"name": "' + b"x" * (MAX_BYTES * 4) + b'"}}'
    for sent in (body, iter([body[:1000], body[1000:]])):  # with and without Content-Length
        response = _post(hostile, sent)
        assert response.status_code == 413, response.text[:300]
        _is_ogc_exception(response)
        assert "server.manager.limits.max_request_bytes" in response.json()["description"]
    assert _post(hostile, b'{"inputs": {"name": "' + b"x" * 1000 + b'"}}').status_code == 200


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "server.manager.limits.max_json_depth"),
        (b'{"inputs": {"name": ' + b"[" * 70 + b"]" * 70 + b"}}", "max_json_depth"),
        (b'{"inputs": {"name": "\xff\xfe caf\xe9"}}', "not valid UTF-8"),
        (b'{"inputs": {"name": "x"}', "not valid JSON"),
        (b'[{"inputs": {"name": "x"}}]', "must be a JSON object, not list"),
        (b'"inputs"', "must be a JSON object, not str"),
        (b'{"inputs": ["name", "x"]}', "'inputs' must be a JSON object"),
        (b'{"inputs": {"name": "x"}, "outputs": 3}', "'outputs' must be a JSON object"),
        (b'{"inputs": {"name": "x"}, "response": {"raw": 1}}', "'response' must be"),
        (b'{"inputs": {"name": "x"}, "response": "everything"}', "'response' must be"),
        (b'{"inputs": {"name": "x"}, "subscriber": "http://x/"}', "'subscriber' must be"),
        (b'{"inputs": {"name": "x"}, "subscriber": {"successUri": 5}}', "must be a URI string"),
        (b'{"inputs": {"name": "x"}, "subscriber": {"failedUri": "x"}}', "needs a 'successUri'"),
        (b'{"inputs": {"name": "nul \\u0000"}}', "NUL character"),
        (b'{"inputs": {"name": "half \\ud800"}}', "lone UTF-16 surrogate"),
    ],
    ids=[
        "deep-100000",
        "deep-70",
        "invalid-utf8",
        "truncated",
        "array",
        "string",
        "inputs-array",
        "outputs-number",
        "response-object",
        "response-unknown",
        "subscriber-string",
        "subscriber-number",
        "subscriber-no-success",
        "nul",
        "lone-surrogate",
    ],
)
def test_bad_bodies_are_400_saying_why(hostile: Pygeoapi, body: bytes, expected: str) -> None:
    response = _post(hostile, body)
    assert response.status_code == 400, response.text[:300]
    _is_ogc_exception(response)
    assert expected in response.json()["description"]


def test_no_unhandled_error_in_the_log(hostile: Pygeoapi) -> None:
    # Runs after the tests above (the fuzzing included). pygeoapi logs each
    # 4xx it answers with the exception being handled; an unhandled one is
    # logged by Flask as "Exception on <path>" (gunicorn: "Error handling
    # request", uvicorn: "Exception in ASGI application"), and answered 5xx.
    for body in (b"[" * 5000, b"\xc3\x28", b"[]", b'{"subscriber": []}'):
        assert _post(hostile, body).status_code == 400
    log = hostile.log_path.read_text(errors="replace")
    for escaped in ("Exception on /", "Error handling request", "Exception in ASGI application"):
        assert escaped not in log
    assert re.search(r'HTTP/1\.[01]" 5\d\d ', log) is None
    for error in ("RecursionError", "UnicodeDecodeError", "UnicodeEncodeError", "AttributeError"):
        assert error not in log


def test_valid_surrogate_pairs_and_escaped_backslashes_pass(hostile: Pygeoapi) -> None:
    response = _post(hostile, b'{"inputs": {"name": "\\ud83d\\ude00 \\\\u0000"}}')
    assert response.status_code == 200, response.text
    assert response.json()["value"] == "Hello \U0001f600 \\u0000!"


# -- job ids and result keys ------------------------------------------------------

HOSTILE_JOB_IDS = [
    "..",
    "../outside",
    "..%2foutside",
    "%2e%2e%2foutside",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "%2F",
    "a%2Fb",
    "%00",
    "x%00.json",
    "%2e%2e",
    "....//outside",
    "%ff%fe",
    "\\..\\outside",
    "~",
]


def test_hostile_job_ids_are_404_and_read_nothing_outside(hostile: Pygeoapi) -> None:
    kept = hostile.execute("hello-world", {"name": "keep me"})
    assert kept.status_code == 200
    job_id = kept.headers["Location"].rsplit("/", 1)[1]
    outside = hostile.results_dir.parent / "outside"
    for job in HOSTILE_JOB_IDS:
        for method, suffix in (("GET", ""), ("GET", "/results"), ("DELETE", "")):
            status, mimetype, body = hostile.raw(method, f"/jobs/{job}{suffix}?f=json")
            where = f"{method} /jobs/{job}{suffix}"
            assert status in (400, 404), f"{where}: {status} {body[:200]!r}"
            assert mimetype.startswith("application/json"), where
            document = json.loads(body)
            validate(document, "exception")
            assert SECRET.encode() not in body, where
    # Nothing stored was lost, and the folder beside the store is untouched.
    results = hostile.client.get(f"/jobs/{job_id}/results", params={"f": "json"})
    assert results.status_code == 200
    assert results.json() == {"id": "echo", "value": "Hello keep me!"}
    assert SECRET in (outside / "output").read_text()
    assert (outside / "manifest.json").exists()


def test_hostile_process_ids_are_404(hostile: Pygeoapi) -> None:
    for process in ("..", "%2e%2e%2fjobs", "hello-world%00", "%2F", "hello-world%2F.."):
        for method, suffix in (("GET", ""), ("POST", "/execution")):
            status, mimetype, body = hostile.raw(method, f"/processes/{process}{suffix}")
            assert status in (400, 404), f"{method} {process}{suffix}: {status} {body[:200]!r}"
            assert mimetype.startswith("application/json")
            validate(json.loads(body), "exception")


BAD_KEYS = [
    "../outside",
    "../../outside",
    "/etc/passwd",
    "",
    ".",
    "..",
    "00000000-0000-0000-0000-000000000000/../../outside",
    "00000000-0000-0000-0000-000000000000\x00",
    "{00000000-0000-0000-0000-000000000000}",
    "urn:uuid:00000000-0000-0000-0000-000000000000",
    "6BA7B810-9DAD-11D1-80B4-00C04FD430C8",  # not the canonical (lower-case) form
]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_result_store_refuses_keys_leaving_its_root(tmp_path: Path, key: str) -> None:
    store = ResultStore((tmp_path / "store").as_uri())
    kept = str(uuid.uuid4())
    store.write(kept, "application/json", {"kept": True})
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "output").write_text(SECRET)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    calls = [
        lambda: store.write(key, "application/json", {"a": 1}),
        lambda: store.read(key),
        lambda: store.read_manifest(key),
        lambda: list(store.iter_output(key)),
        lambda: store.exists(key),
        lambda: store.delete(key),
    ]
    for call in calls:
        with pytest.raises(ResultNotFound):
            call()
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert store.read(kept)[1] == {"kept": True}


# -- callbacks to internal addresses ---------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://[::1]:8080/cb",
        "http://[::ffff:127.0.0.1]/cb",
        "http://[::ffff:7f00:1]/cb",
        "http://[64:ff9b::7f00:1]/cb",
        "http://[2002:7f00:1::]/cb",
        "http://[::]/cb",
        "http://[fe80::1]/cb",
        "http://[fd00::1]/cb",
        "http://0.0.0.0/cb",
        "http://0/cb",
        "http://2130706433/cb",
        "http://0x7f000001/cb",
        "http://0177.0.0.1/cb",
        "http://127.1/cb",
        "http://169.254.169.254/latest/meta-data",
        "http://localhost:9/cb",
        "http://LocalHost/cb",
    ],
)
def test_internal_callback_destinations_are_refused(url: str) -> None:
    problem = CallbackPolicy().problem(url)
    assert problem is not None
    assert "internal address" in problem or "cannot be resolved" in problem


@pytest.mark.parametrize("url", ["http://[::1", "http://x:99999/", "javascript:alert(1)", "//x/"])
def test_malformed_callback_urls_are_refused(url: str) -> None:
    assert CallbackPolicy().problem(url) is not None


def test_internal_callbacks_are_400_over_http_and_make_no_job(hostile: Pygeoapi, prefect_api):
    tags = {"tags": {"all_": ["pygeoapi", "pygeoapi.process:hello-world"]}}
    before = prefect_api.count_flow_runs(tags)
    for url in ("http://[::1]:9/cb", "http://2130706433/cb", "http://0.0.0.0:9/", "http://[::1"):
        response = hostile.execute("hello-world", {"name": "x"}, subscriber={"successUri": url})
        assert response.status_code == 400, response.text
        _is_ogc_exception(response)
        assert "subscriber successUri" in response.json()["description"]
    assert prefect_api.count_flow_runs(tags) == before
