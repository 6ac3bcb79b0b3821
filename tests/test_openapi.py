"""The OpenAPI document declares what the app accepts, and the app honours it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from conftest import ROOT
from ogc import validate

from pygeoapi_prefect.cli.openapi import write_openapi

JOB_PARAMETERS = {"limit", "offset", "f", "processID", "status", "datetime"}
JOB_PARAMETERS |= {"minDuration", "maxDuration", "type", "owner"}


def _offline(node: Any) -> Any:
    # The document refers to schemas.opengis.net; the tests have no network.
    if isinstance(node, list):
        return [_offline(item) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("http"):
        return {"description": f"see {ref}"}
    return {key: _offline(value) for key, value in node.items()}


def _parameters(document: dict[str, Any], path: str, method: str = "get") -> dict[str, Any]:
    found = {}
    for parameter in document["paths"][path][method].get("parameters", []):
        if "$ref" in parameter:
            parameter = document["components"]["parameters"][parameter["$ref"].rsplit("/", 1)[1]]
        found[parameter["name"]] = parameter
    return found


def test_the_document_declares_the_job_api_and_stays_valid(tmp_path):
    from openapi_spec_validator import validate as validate_spec

    config = yaml.safe_load((ROOT / "example-config.yml").read_text())
    config["server"]["limits"] = {"default_items": 5, "max_items": 50, "on_exceed": "error"}
    path = tmp_path / "strict-config.yml"
    path.write_text(yaml.safe_dump(config))
    write_openapi(path, tmp_path / "openapi.yml")
    document = yaml.safe_load((tmp_path / "openapi.yml").read_text())
    validate_spec(_offline(document))

    limit = _parameters(document, "/processes")["limit"]
    assert limit["in"] == "query"
    assert limit["schema"] == {"type": "integer", "minimum": 1, "default": 5, "maximum": 50}
    jobs = _parameters(document, "/jobs")
    assert set(jobs) >= JOB_PARAMETERS
    assert jobs["limit"]["schema"]["maximum"] == 50
    assert jobs["status"]["schema"]["items"]["enum"] == [
        "accepted",
        "running",
        "successful",
        "failed",
        "dismissed",
    ]
    assert jobs["minDuration"]["schema"] == {"type": "number", "minimum": 0}
    assert jobs["type"]["schema"]["items"]["enum"] == ["process"]
    answers = document["paths"]["/jobs/{jobId}"]["delete"]["responses"]
    assert "204" not in answers
    assert answers["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/statusInfo.yaml"
    )
    assert answers["404"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/exception.yaml"
    )

    logs = document["paths"]["/jobs/{jobId}/logs"]["get"]
    assert set(_parameters(document, "/jobs/{jobId}/logs")) == {"jobId", "f", "limit", "offset"}
    assert set(logs["responses"]["200"]["content"]) == {"application/json", "text/plain"}
    failed = document["paths"]["/jobs/{jobId}/results"]["get"]["responses"]["500"]
    assert failed["content"]["application/json"]["schema"]["$ref"].endswith("/exception.yaml")

    # With pygeoapi's default (throttle), more than max_items is cut, not refused.
    write_openapi(ROOT / "example-config.yml", tmp_path / "example.yml")
    example = yaml.safe_load((tmp_path / "example.yml").read_text())
    assert "maximum" not in _parameters(example, "/jobs")["limit"]["schema"]
    output = document["paths"]["/jobs/{jobId}/results/{outputId}"]["get"]
    assert set(_parameters(document, "/jobs/{jobId}/results/{outputId}")) == {"jobId", "outputId"}
    assert output["responses"]["404"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/exception.yaml"
    )
    scrape = document["paths"]["/metrics"]["get"]
    assert "text/plain; version=0.0.4" in scrape["responses"]["200"]["content"]
    assert "503" in scrape["responses"]


@pytest.mark.parametrize(
    ("metrics", "path"),
    [({"enabled": False}, None), ({"path": "/internal/metrics"}, "/internal/metrics")],
    ids=["off", "own-path"],
)
def test_the_metrics_are_declared_only_where_they_are_served(tmp_path, metrics, path):
    from openapi_spec_validator import validate as validate_spec

    config = yaml.safe_load((ROOT / "example-config.yml").read_text())
    config["server"]["manager"]["metrics"] = metrics
    written = tmp_path / "metrics-config.yml"
    written.write_text(yaml.safe_dump(config))
    write_openapi(written, tmp_path / "openapi.yml")
    document = yaml.safe_load((tmp_path / "openapi.yml").read_text())
    validate_spec(_offline(document))
    declared = {p for p in document["paths"] if p.endswith("metrics")}
    assert declared == ({path} if path else set())


def test_a_served_pygeoapi_honours_every_declared_parameter(pygeoapi):
    client = pygeoapi.client
    document = client.get("/openapi", params={"f": "json"}).json()
    assert set(_parameters(document, "/processes")) == {"f", "limit"}
    assert set(_parameters(document, "/jobs")) == JOB_PARAMETERS

    assert len(client.get("/processes", params={"limit": 1, "f": "json"}).json()["processes"]) == 1
    assert client.get("/processes", params={"limit": 0, "f": "json"}).status_code == 400

    ok = pygeoapi.execute("hello-world", {"name": "declared"}).headers["Location"]
    ok_id = ok.rsplit("/", 1)[-1]
    failed = pygeoapi.execute("fail", {"what": "declared"}, asynchronous=True).json()["jobID"]
    pygeoapi.wait_for(failed, "failed")

    def jobs(answer: int = 200, **params: Any) -> list[dict[str, Any]]:
        response = client.get("/jobs", params={"f": "json", **params})
        assert response.status_code == answer, (params, response.text)
        return response.json().get("jobs", []) if answer == 200 else []

    assert len(jobs(limit=1)) == 1
    jobs(400, limit=0)
    assert jobs(limit=1, offset=1)[0]["jobID"] != jobs(limit=1)[0]["jobID"]
    jobs(400, offset=-1)
    html = client.get("/jobs", params={"f": "html", "limit": 1})
    assert html.headers["Content-Type"].startswith("text/html")
    listed = jobs(processID="hello-world", limit=50)
    assert listed and {job["processID"] for job in listed} == {"hello-world"}
    assert {job["status"] for job in jobs(status="failed", processID="fail", limit=50)} == {
        "failed"
    }
    assert failed in {job["jobID"] for job in jobs(status="failed,successful", limit=200)}
    jobs(400, status="sleepy")
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    assert ok_id in {job["jobID"] for job in jobs(datetime=f"{since}/..", limit=200)}
    assert jobs(datetime="2000-01-01T00:00:00Z/2000-01-02T00:00:00Z") == []
    jobs(400, datetime="yesterday")
    assert ok_id in {job["jobID"] for job in jobs(minDuration=0, maxDuration=3600, limit=200)}
    assert jobs(minDuration=86400) == []
    jobs(400, minDuration=-1)
    assert jobs(type="process", limit=1)
    assert jobs(type="other") == []

    response = client.delete(f"/jobs/{ok_id}")
    assert response.status_code == 200
    validate(response.json(), "statusInfo")
    again = client.delete(f"/jobs/{ok_id}")
    assert again.status_code == 404
    validate(again.json(), "exception")
