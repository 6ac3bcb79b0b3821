"""The OpenAPI document: pygeoapi's, completed with what this app really accepts.

pygeoapi 0.24 generates the document from the config, but its job endpoints
miss what OGC API - Processes (and :mod:`pygeoapi_prefect.web.flask`) take:
``limit`` on ``GET /processes`` and ``GET /jobs``, ``offset``, ``f`` and the
job-list filters on ``GET /jobs``, and the answers of ``DELETE /jobs/{jobId}``
(200 with a statusInfo document, not 204), nor ``/metrics``. :func:`complete_document` adds
them to the generated document; :func:`write_openapi` writes it with a stamp
that :func:`openapi_is_current` checks.
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any

from pygeoapi_prefect import __version__

__all__ = ["complete_document", "default_openapi_path", "openapi_is_current", "write_openapi"]

_STAMP = "# pygeoapi-prefect openapi stamp: "
_SCHEMAS = "https://schemas.opengis.net/ogcapi/processes/part1/1.0/openapi/schemas/"
_STATUSES = ["accepted", "running", "successful", "failed", "dismissed"]


def default_openapi_path(config: Path) -> Path:
    """``example-config.yml`` -> ``example-openapi.yml``; else ``<stem>-openapi.yml``."""
    stem = config.stem
    name = stem.replace("config", "openapi") if "config" in stem else f"{stem}-openapi"
    return config.with_name(name + config.suffix)


def _stamp(config: Path) -> str:
    import pygeoapi

    digest = hashlib.sha256(config.read_bytes()).hexdigest()
    return (
        f"{_STAMP}{config.name} sha256={digest} pygeoapi={pygeoapi.__version__} "
        f"pygeoapi-prefect={__version__}"
    )


def write_openapi(config: Path, openapi: Path) -> None:
    """Generate the OpenAPI document for ``config`` into ``openapi``.

    pygeoapi's document, completed by :func:`complete_document`, in YAML,
    after a stamp line naming the config's hash and both versions.
    """
    import yaml  # type: ignore[import-untyped]
    from pygeoapi.openapi import get_oas
    from pygeoapi.util import yaml_load

    with config.open(encoding="utf-8") as handle:
        settings = yaml_load(handle)
    document = complete_document(get_oas(settings), settings)
    text = yaml.safe_dump(document, default_flow_style=False)
    openapi.write_text(f"{_stamp(config)}\n{text}", encoding="utf-8")


def openapi_is_current(config: Path, openapi: Path) -> bool:
    """Whether ``openapi`` was generated from this exact config and these versions."""
    if not openapi.exists():
        return False
    with openapi.open(encoding="utf-8") as handle:
        return handle.readline().rstrip("\n") == _stamp(config)


def _json(schema: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": _SCHEMAS + schema}}}


def _query(name: str, description: str, schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
        "style": "form",
        **extra,
    }


def _limit(limits: dict[str, Any]) -> dict[str, Any]:
    # The very rule of pygeoapi's evaluate_limit: server.limits, defaults 10/10.
    default = int(limits.get("default_items", 10))
    most = int(limits.get("max_items", 10))
    schema: dict[str, Any] = {"type": "integer", "minimum": 1, "default": default}
    if limits.get("on_exceed", "throttle") == "error":
        schema["maximum"] = most
        beyond = f"more than {most} (server.limits.max_items) is an error"
    else:
        beyond = f"more than {most} (server.limits.max_items) is cut to {most}"
    return _query(
        "limit",
        f"The most items in the answer: {default} when left out; {beyond}.",
        schema,
        explode=False,
    )


def _array(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


def _seconds() -> dict[str, Any]:
    return {"type": "number", "minimum": 0}


def _job_filters() -> list[dict[str, Any]]:
    return [
        _query(
            "processID",
            "Only jobs of these processes (comma-separated, or the parameter repeated).",
            _array({"type": "string"}),
            explode=False,
        ),
        _query(
            "status",
            "Only jobs in these states (comma-separated, or the parameter repeated).",
            _array({"type": "string", "enum": _STATUSES}),
            explode=False,
        ),
        _query(
            "datetime",
            "Only jobs created at this RFC 3339 instant or within this interval "
            "(`start/end`, either end open as `..` or empty).",
            {"type": "string"},
            explode=False,
        ),
        _query("minDuration", "Only jobs that ran at least this many seconds.", _seconds()),
        _query("maxDuration", "Only jobs that ran at most this many seconds.", _seconds()),
        _query(
            "type",
            "Only jobs of these types; every job of this server is a `process` job, "
            "so another value matches none.",
            _array({"type": "string", "enum": ["process"]}),
            explode=False,
        ),
        _query(
            "owner",
            "Only jobs of this user (`server.manager.auth`): admins may name anyone; "
            "everyone else sees only their own jobs anyway.",
            {"type": "string"},
        ),
    ]


def _format(formats: list[str]) -> dict[str, Any]:
    return _query(
        "f",
        "The format of the answer.",
        {"type": "string", "enum": formats, "default": "json"},
        explode=False,
    )


def _offset() -> dict[str, Any]:
    return _query(
        "offset",
        "How many jobs to skip, newest first (for paging with `limit`).",
        {"type": "integer", "minimum": 0, "default": 0},
        explode=False,
    )


def _add_parameters(
    document: dict[str, Any], operation: dict[str, Any], wanted: list[dict[str, Any]]
) -> None:
    parameters = operation.setdefault("parameters", [])
    present = set()
    for parameter in parameters:
        if "$ref" in parameter:
            name = parameter["$ref"].rsplit("/", 1)[-1]
            parameter = document.get("components", {}).get("parameters", {}).get(name, {})
        present.add((parameter.get("in"), parameter.get("name")))
    for parameter in wanted:
        if (parameter["in"], parameter["name"]) not in present:
            parameters.append(parameter)


def complete_document(document: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """Add what pygeoapi's generated document misses of the process and job API.

    Args:
        document: the document of :func:`pygeoapi.openapi.get_oas` (not changed).
        settings: the pygeoapi config it was generated from (``server.limits``).

    Returns:
        A copy with ``limit`` on ``GET /processes`` and ``GET /jobs``; ``offset``,
        ``f`` and the job-list filters on ``GET /jobs``; the 200 (statusInfo)
        and 404 (exception) answers of ``DELETE /jobs/{jobId}``; the 500 answer of a
        failed job's results; ``GET /jobs/{jobId}/logs``;
        ``GET /jobs/{jobId}/results/{outputId}``; and the metrics (at
        ``server.manager.metrics.path``) when they are on. Parameters the document
        already declares are left as they are.

    """
    document = copy.deepcopy(document)
    paths = document.get("paths", {})
    limits = settings.get("server", {}).get("limits") or {}
    if "get" in paths.get("/processes", {}):
        _add_parameters(document, paths["/processes"]["get"], [_limit(limits)])
    if "get" in paths.get("/jobs", {}):
        wanted = [_limit(limits), _offset(), _format(["json", "html"]), *_job_filters()]
        _add_parameters(document, paths["/jobs"]["get"], wanted)
    delete = paths.get("/jobs/{jobId}", {}).get("delete")
    if delete is not None:
        responses = delete.setdefault("responses", {})
        responses.pop("204", None)
        responses["200"] = {
            "description": "The job is dismissed (stopped first if it was running, its "
            "results deleted); its status document.",
            "content": _json("statusInfo.yaml"),
        }
        responses["404"] = {
            "description": "No such job, or it was dismissed already.",
            "content": _json("exception.yaml"),
        }
    results = paths.get("/jobs/{jobId}/results", {}).get("get")
    if results is not None:
        answers = results.setdefault("responses", {})
        answers["500"] = {
            "description": "The job failed (/req/core/job-results-failed): its own message, "
            "and its own status and code if the process raised a pygeoapi error with them "
            "(400 InvalidParameterValue, say).",
            "content": _json("exception.yaml"),
        }
    if "/jobs/{jobId}" in paths and "/jobs/{jobId}/logs" not in paths:
        paths["/jobs/{jobId}/logs"] = _logs_path(paths["/jobs/{jobId}"])
    if "/jobs/{jobId}/results" in paths and _OUTPUT not in paths:
        paths[_OUTPUT] = _one_output()
    metrics_path = _metrics_path(settings)
    if metrics_path is not None and metrics_path not in paths:
        paths[metrics_path] = _metrics()
    return document


def _metrics_path(settings: dict[str, Any]) -> str | None:
    """Where this config serves its metrics (``server.manager.metrics``), if it does."""
    from pydantic import ValidationError

    from pygeoapi_prefect.config import MetricsConfig

    manager = (settings.get("server") or {}).get("manager") or {}
    if not str(manager.get("name") or "").startswith("pygeoapi_prefect."):
        return None
    try:
        config = MetricsConfig(**(manager.get("metrics") or {}))
    except (TypeError, ValidationError):
        return None  # the config's own check at start names the key
    return config.path if config.enabled else None


def _metrics() -> dict[str, Any]:
    return {
        "get": {
            "summary": "Prometheus metrics",
            "description": "The job service's metrics (jobs submitted and finished, run and "
            "queue times, the local pool, Prefect API calls, callbacks) in Prometheus' text "
            "format, or OpenMetrics when the Accept header asks for it; see the Operating "
            "page of pygeoapi-prefect's documentation.",
            "operationId": "getMetrics",
            "tags": ["server"],
            "responses": {
                "200": {
                    "description": "Every metric of every server process.",
                    "content": {
                        "text/plain; version=0.0.4": {"schema": {"type": "string"}},
                        "application/openmetrics-text": {"schema": {"type": "string"}},
                    },
                },
                "503": {
                    "description": "Metrics cannot be recorded in this server process "
                    "(its `PROMETHEUS_MULTIPROC_DIR` is not usable).",
                    "content": _json("exception.yaml"),
                },
            },
        }
    }


def _logs_path(job_path: dict[str, Any]) -> dict[str, Any]:
    # The job id parameter as the status operation declares it.
    job_id = [
        p
        for p in (job_path.get("get") or {}).get("parameters", [])
        if "$ref" in p or p.get("name") == "jobId"
    ][:1] or [{"name": "jobId", "in": "path", "required": True, "schema": {"type": "string"}}]
    line = {
        "type": "object",
        "properties": {
            "timestamp": {"type": "string", "format": "date-time"},
            "level": {"type": "string"},
            "logger": {"type": "string"},
            "message": {"type": "string"},
        },
    }
    page = {
        "type": "object",
        "required": ["jobID", "logs", "links"],
        "properties": {
            "jobID": {"type": "string"},
            "processID": {"type": "string"},
            "status": {"type": "string", "enum": _STATUSES},
            "logs": _array(line),
            "numberReturned": {"type": "integer", "minimum": 0},
            "links": _array({"$ref": _SCHEMAS + "link.yaml"}),
        },
    }
    return {
        "get": {
            "summary": "The log of a job",
            "description": "The job's log lines (what its process logged and printed, and "
            "Prefect's lines about its flow run), oldest first; see the Operating page of "
            "pygeoapi-prefect's documentation.",
            "operationId": "getJobLogs",
            "tags": (job_path.get("get") or {}).get("tags", ["server"]),
            "parameters": [
                *job_id,
                _format(["json", "txt"]),
                _query(
                    "limit",
                    "Lines in the answer, 100 when left out.",
                    {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                    explode=False,
                ),
                _query(
                    "offset",
                    "How many lines to skip, oldest first (for paging with `limit`).",
                    {"type": "integer", "minimum": 0, "default": 0},
                    explode=False,
                ),
            ],
            "responses": {
                "200": {
                    "description": "One page of the job's log lines.",
                    "content": {
                        "application/json": {"schema": page},
                        "text/plain": {"schema": {"type": "string"}},
                    },
                },
                "400": {
                    "description": "A bad `limit`, `offset` or `f`.",
                    "content": _json("exception.yaml"),
                },
                "404": {"description": "No such job.", "content": _json("exception.yaml")},
            },
        }
    }


_OUTPUT = "/jobs/{jobId}/results/{outputId}"


def _one_output() -> dict[str, Any]:
    # GET /jobs/{jobId}/results/{outputId} (OGC Core 2.0 draft; docs/references.md).
    path_parameter = {"in": "path", "required": True, "schema": {"type": "string"}}
    return {
        "get": {
            "summary": "One output of a job",
            "description": "The output, streamed with its own media type.",
            "tags": ["jobs"],
            "operationId": "getJobOutput",
            "parameters": [
                {**path_parameter, "name": "jobId", "description": "The job's id."},
                {**path_parameter, "name": "outputId", "description": "The output's id."},
            ],
            "responses": {
                "200": {
                    "description": "The output.",
                    "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
                },
                "404": {
                    "description": "No such job or output, or the job has not finished.",
                    "content": _json("exception.yaml"),
                },
            },
        }
    }
