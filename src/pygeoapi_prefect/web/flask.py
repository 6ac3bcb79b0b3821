"""pygeoapi's Flask app, with the job-API fixes this manager relies on.

Serve ``pygeoapi_prefect.flask_app:APP`` (e.g. with gunicorn) instead of
``pygeoapi.flask_app:APP``; ``pygeoapi-prefect serve`` does. It is pygeoapi's
own app object with three additions, each for a gap in pygeoapi 0.24's API
layer (see docs/conformance.md):

- the job-list filters of OGC API - Processes (``processID``, ``status``,
  ``datetime``, ``minDuration``, ``maxDuration``, ``type``), which pygeoapi
  does not pass to the manager, reach it (and bad values answer 400);
- errors of the manager that pygeoapi does not catch (Prefect unreachable
  while listing jobs, say) become OGC exception documents with their HTTP
  status (503, 502, ...) instead of an HTML 500 page;
- job status documents leave out keys that have no value, instead of
  ``null`` or ``""`` where the OGC schema wants a date-time, and the job
  list keeps the manager's newest-first order;
- the answer to ``DELETE /jobs/{id}`` is a JSON statusInfo document with
  ``type: process``, served as ``application/json``;
- execution responses link to their job (``Link: rel=monitor``), status
  documents to themselves, their results and their Prefect flow run;
- the HTML pages of the job list, a job and a process are rendered from
  these fixed documents (:mod:`pygeoapi_prefect.web.html_pages`), and process
  descriptions link to their own jobs;
- raw non-JSON results (images, files) are streamed from the result store
  instead of being loaded whole;
- exception types are the OGC URIs where the standard has one, and
  ``/conformance`` declares the job-list and dismiss classes;
- request bodies on /processes and /jobs are bounded in size, and execute
  bodies are checked (UTF-8, JSON depth, OGC shape) before pygeoapi parses
  them (:mod:`pygeoapi_prefect.web.guard`): 413 or 400, never a traceback;
- a job id that Werkzeug would redirect (``/jobs/%2F``) is a 404.

Like pygeoapi's app, importing this module reads ``PYGEOAPI_CONFIG`` and
``PYGEOAPI_OPENAPI``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Response, request
from pygeoapi.flask_app import APP, api_
from werkzeug.datastructures import Headers
from werkzeug.exceptions import HTTPException, NotFound, RequestEntityTooLarge
from werkzeug.routing import RequestRedirect

from pygeoapi_prefect.errors import (
    EXCEPTION_TYPES,
    InvalidParameter,
    PrefectManagerError,
    RequestTooLarge,
)
from pygeoapi_prefect.execution.engine import autostart
from pygeoapi_prefect.jobs.exchange import begin_request, current_exchange
from pygeoapi_prefect.jobs.query import parse_job_query
from pygeoapi_prefect.web import guard
from pygeoapi_prefect.web.html_pages import process_job_links, render_html

logger = logging.getLogger(__name__)

__all__ = ["APP"]

_JSON = "application/json"
if hasattr(api_.manager, "jobs_url"):
    # Each new job's flow run records where pygeoapi serves it.
    api_.manager.jobs_url = f"{api_.base_url}/jobs"
_EMPTY = (None, "")
_CONFORMANCE = "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/"
#: Conformance classes this manager implements beyond those pygeoapi declares.
EXTRA_CONFORMANCE = [_CONFORMANCE + "job-list", _CONFORMANCE + "dismiss"]


@APP.errorhandler(PrefectManagerError)
def _manager_error(exc: PrefectManagerError) -> Response:
    return _error_response(exc)


def _error_response(exc: PrefectManagerError) -> Response:
    body = {
        "type": EXCEPTION_TYPES.get(str(exc.ogc_exception_code), exc.ogc_exception_code),
        "code": exc.ogc_exception_code,
        "title": exc.ogc_exception_code,
        "status": int(exc.http_status_code),
        "description": exc.message,
        "detail": exc.message,
    }
    return Response(json.dumps(body), status=int(exc.http_status_code), mimetype=_JSON)


@APP.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> Response | HTTPException:
    # Flask's own errors (no such route, wrong method) on the process and job
    # endpoints: an OGC exception document instead of an HTML page.
    if request.path.split("/")[1:2] not in (["jobs"], ["processes"]):
        return exc
    code = "NotFound" if exc.code == 404 else exc.name.replace(" ", "")
    body = {
        "type": code,
        "code": code,
        "title": exc.name,
        "status": exc.code,
        "description": exc.description,
        "detail": exc.description,
    }
    return Response(json.dumps(body), status=exc.code or 500, mimetype=_JSON)


def _clean_job(job: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in job.items() if value not in _EMPTY}


def _with_links(job: dict[str, Any]) -> dict[str, Any]:
    # statusInfo links: the job itself, its results (pygeoapi's, retitled),
    # and its flow run in the Prefect UI.
    job_url = f"{api_.base_url}/jobs/{job['jobID']}"
    links = [link for link in job.get("links", []) if link.get("rel") != "self"]
    if job.get("status") != "successful":
        # pygeoapi links a queued or running job to results it does not have yet.
        links = [link for link in links if not link.get("rel", "").endswith("/results")]
    for link in links:
        if link.get("rel", "").endswith("/results"):
            link["title"] = f"Results of job {job['jobID']}"
    links.insert(
        0, {"href": f"{job_url}?f=json", "rel": "self", "type": _JSON, "title": "This job"}
    )
    ui_url = getattr(api_.manager, "flow_run_url", None)
    if ui_url is not None:
        links.append(
            {
                "href": ui_url(job["jobID"]),
                "rel": "related",
                "type": "text/html",
                "title": "This job's flow run in the Prefect UI",
            }
        )
    job["links"] = links
    return job


def _fixed_job_document(document: dict[str, Any]) -> dict[str, Any] | None:
    # A job list or status document with the fixes; None if it is neither.
    if isinstance(document.get("jobs"), list):
        jobs = [_with_links(_clean_job(job)) for job in document["jobs"]]
        # pygeoapi re-sorts each page by start time; the manager's order is
        # newest first by creation, which is what the page was cut from.
        jobs.sort(key=lambda job: job.get("created", ""), reverse=True)
        document["jobs"] = jobs
        matched = current_exchange().number_matched
        if matched is not None:
            document["numberMatched"] = matched
    elif "jobID" in document:
        document = _with_links(_clean_job(document))
    else:
        return None
    return document


def _is_json(response: Response) -> bool:
    return (
        response.mimetype == _JSON
        and not response.headers.get("Content-Encoding")
        and not response.direct_passthrough
    )


def _add_conformance(response: Response) -> Response:
    document = json.loads(response.get_data())
    classes = document.get("conformsTo", [])
    document["conformsTo"] = classes + [c for c in EXTRA_CONFORMANCE if c not in classes]
    response.set_data(json.dumps(document))
    return response


def _exception_type(response: Response, parts: list[str]) -> Response:
    # OGC exception types are URIs; pygeoapi writes short codes (kept in
    # "code"), and calls an unknown job an invalid parameter.
    if not _is_json(response):
        return response
    try:
        document = json.loads(response.get_data())
    except ValueError:
        return response
    if not isinstance(document, dict) or "type" not in document:
        return response
    code = str(document.get("code", document["type"]))
    if response.status_code == 404 and len(parts) == 3 and parts[1] == "jobs":
        code = "NoSuchJob"
    document["code"] = code
    document["type"] = EXCEPTION_TYPES.get(code, document["type"])
    document.setdefault("status", response.status_code)
    response.set_data(json.dumps(document))
    return response


def _streamed_result(job_id: str) -> Response | None:
    # A large raw output (an image, a file) goes out chunk by chunk from the
    # result store; pygeoapi's handler would load it whole first.
    stream_result = getattr(api_.manager, "stream_result", None)
    if stream_result is None or request.args.get("f") == "html":
        return None
    found = stream_result(job_id)
    if found is None:
        return None
    manifest, chunks = found
    response = Response(chunks, mimetype=manifest.mimetype, direct_passthrough=True)
    response.headers["Content-Length"] = str(manifest.size)
    return response


def _monitor_links(response: Response) -> Response:
    # OGC /req/core/process-execute-sync-*: point the client at its job.
    if current_exchange().unrecorded:
        # A sync job whose record waits for Prefect: there is no job to point at yet.
        response.headers.pop("Location", None)
    location = response.headers.get("Location")
    if location and response.status_code in (200, 201):
        response.headers.add(
            "Link", f'<{location}>; rel="monitor"; type="{_JSON}"; title="Job status"'
        )
        response.headers.add(
            "Link",
            f'<{location}/results>; rel="http://www.opengis.net/def/rel/ogc/1.0/results"; '
            f'title="Job results"',
        )
    return response


def _process_links(response: Response) -> Response:
    if request.method != "GET" or not _is_json(response):
        return response
    document = process_job_links(json.loads(response.get_data()), api_.base_url)
    response.set_data(
        json.dumps(document, indent=4 if APP.config.get("JSONIFY_PRETTYPRINT_REGULAR") else None)
    )
    return response


@APP.before_request
def _guard_request() -> Response | HTTPException | None:
    parts = request.path.split("/")
    if parts[1:2] not in (["jobs"], ["processes"]):
        return None
    raw_path = str(request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI") or "")
    if isinstance(request.routing_exception, RequestRedirect) or (
        "%2f" in raw_path.partition("?")[0].lower()
    ):
        # A job or process id with a path separator names nothing; Werkzeug
        # would decode it and redirect or route it elsewhere (/jobs/%2F).
        not_found: Response | HTTPException = _http_error(NotFound())
        return not_found
    limits = getattr(getattr(api_.manager, "config", None), "limits", None)
    if limits is None:
        return None
    # Also bounds a chunked body, which has no Content-Length to check.
    request.max_content_length = limits.max_request_bytes
    try:
        guard.check_size(request.content_length, limits.max_request_bytes)
        if request.method == "POST" and parts[-1] == "execution":
            body = request.data
            if request.content_length is None and len(body) >= limits.max_request_bytes:
                # A chunked body is cut at the limit, not refused: refuse it here.
                raise RequestEntityTooLarge()
            guard.check_execute_body(body, max_depth=limits.max_json_depth)
    except RequestEntityTooLarge:
        return _error_response(
            RequestTooLarge(
                f"The request body is larger than the {limits.max_request_bytes} bytes this "
                "server accepts (server.manager.limits.max_request_bytes)"
            )
        )
    except PrefectManagerError as exc:
        return _error_response(exc)
    return None


@APP.before_request
def _job_query() -> Response | None:
    # pygeoapi passes only limit and offset to the manager: the job-list
    # filters travel in this request's exchange (pygeoapi_prefect.jobs.exchange).
    exchange = begin_request()
    parts = request.path.rstrip("/").split("/")
    if request.method == "GET" and parts[1:2] == ["jobs"] and parts[3:] == ["results"]:
        return _streamed_result(parts[2])
    if request.method == "GET" and request.path.rstrip("/") == "/jobs":
        try:
            exchange.query = parse_job_query(request.args.to_dict(flat=False))
        except InvalidParameter as exc:
            return _error_response(exc)
    return render_html(api_, request, _fixed_job_document)


@APP.after_request
def _fix_job_documents(response: Response) -> Response:
    if not isinstance(response.headers, Headers):
        # pygeoapi assigns a plain dict, which hides the media type from Flask.
        response.headers = Headers(response.headers)
    parts = request.path.rstrip("/").split("/")
    if parts[1:] == ["conformance"] and response.status_code == 200 and _is_json(response):
        return _add_conformance(response)
    if parts[1:2] in (["jobs"], ["processes"]) and response.status_code >= 400:
        return _exception_type(response, parts)
    if request.method == "POST" and parts[-1] == "execution":
        return _monitor_links(response)
    if len(parts) == 3 and parts[1] == "processes" and response.status_code == 200:
        return _process_links(response)
    if "jobs" not in parts or parts[-1] == "results":
        return response
    if request.method == "DELETE" and response.status_code == 200:
        document = json.loads(response.get_data())
        document.setdefault("type", "process")
        response.set_data(json.dumps(document))
        response.mimetype = _JSON
        return response
    if request.method != "GET" or response.status_code != 200 or not _is_json(response):
        return response
    document = _fixed_job_document(json.loads(response.get_data()))
    if document is None:
        return response
    response.set_data(
        json.dumps(document, indent=4 if APP.config.get("JSONIFY_PRETTYPRINT_REGULAR") else None)
    )
    return response


# The engine (pool, recovery, leases) starts in the process that serves.
autostart(api_.manager)
