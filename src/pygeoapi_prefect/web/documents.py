"""The JSON documents of the job API, fixed where pygeoapi 0.24 departs from the standard.

Pure functions on parsed documents and header lists, shared by every app
through :mod:`pygeoapi_prefect.web.contract`; each fix is listed in
docs/conformance.md:

- status documents leave out keys without a value (pygeoapi writes ``null``
  or ``""`` where the OGC schema wants a date-time), link to themselves,
  their results (only once successful) and their Prefect flow run;
- the job list keeps the manager's newest-first order and says
  ``numberMatched``;
- exception documents carry the OGC type URIs and their status;
- ``/conformance`` declares the job-list and dismiss classes;
- execution responses link to their job (``Link: rel=monitor``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pygeoapi_prefect.errors import EXCEPTION_TYPES, PrefectManagerError
from pygeoapi_prefect.jobs.runs import status_links

__all__ = [
    "EXTRA_CONFORMANCE",
    "JSON",
    "RESULTS_REL",
    "add_conformance",
    "error_document",
    "exception_document",
    "fixed_job_document",
    "monitor_links",
    "offer_reference",
]

JSON = "application/json"
#: The OGC link relation of a job's results.
RESULTS_REL = "http://www.opengis.net/def/rel/ogc/1.0/results"
_CONFORMANCE = "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/"
#: Conformance classes this manager implements beyond those pygeoapi declares.
EXTRA_CONFORMANCE = [_CONFORMANCE + "job-list", _CONFORMANCE + "dismiss"]
_EMPTY = (None, "")

#: The Prefect UI page of a job's flow run (the manager's ``flow_run_url``).
UiUrl = Callable[[str], str]


def error_document(code: str, status: int, title: str, description: str) -> dict[str, Any]:
    """An OGC exception document (``type`` the OGC URI where the standard has one)."""
    return {
        "type": EXCEPTION_TYPES.get(code, code),
        "code": code,
        "title": title,
        "status": status,
        "description": description,
        "detail": description,
    }


def exception_document(exc: PrefectManagerError) -> tuple[int, dict[str, Any]]:
    """The HTTP status and OGC exception document of an error of the manager."""
    code = str(exc.ogc_exception_code)
    status = int(exc.http_status_code)
    return status, error_document(code, status, code, exc.message)


def fix_exception(document: Any, status: int, *, job_status: bool) -> Any:
    """An exception document of pygeoapi with the OGC type URI, its short code kept in ``code``.

    ``job_status``: the answer of ``/jobs/{id}``, where pygeoapi calls an
    unknown job an invalid parameter (``no-such-job`` is right).
    """
    if not isinstance(document, dict) or "type" not in document:
        return document
    code = str(document.get("code", document["type"]))
    if status == 404 and job_status:
        code = "NoSuchJob"
    document["code"] = code
    document["type"] = EXCEPTION_TYPES.get(code, document["type"])
    document.setdefault("status", status)
    return document


def _clean_job(job: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in job.items() if value not in _EMPTY}


def _with_links(job: dict[str, Any], base_url: str, ui_url: UiUrl | None) -> dict[str, Any]:
    # statusInfo links: the job itself, its results (pygeoapi's, retitled),
    # and its flow run in the Prefect UI.
    # pygeoapi's own results links (one per format) are kept, retitled, for a
    # job that has results; it also links queued and running jobs to results
    # they do not have yet. self and the Prefect UI come from the one builder.
    job_id, status = job["jobID"], str(job.get("status"))
    ours = status_links(job_id, status, f"{base_url}/jobs", ui_url(job_id) if ui_url else None)
    kept = [
        link
        for link in job.get("links", [])
        if link.get("rel") != "self"
        and (status == "successful" or not link.get("rel", "").endswith("/results"))
    ]
    for link in kept:
        if link.get("rel", "").endswith("/results"):
            link["title"] = f"Results of job {job_id}"
    if any(link.get("rel", "").endswith("/results") for link in kept):
        ours = [link for link in ours if not link["rel"].endswith("/results")]
    job["links"] = [ours[0], *kept, *ours[1:]]
    return job


def fixed_job_document(
    document: dict[str, Any],
    base_url: str,
    ui_url: UiUrl | None,
    number_matched: int | None,
) -> dict[str, Any] | None:
    """A job list or status document with the fixes; ``None`` if it is neither."""
    if isinstance(document.get("jobs"), list):
        jobs = [_with_links(_clean_job(job), base_url, ui_url) for job in document["jobs"]]
        # pygeoapi re-sorts each page by start time; the manager's order is
        # newest first by creation, which is what the page was cut from.
        jobs.sort(key=lambda job: job.get("created", ""), reverse=True)
        document["jobs"] = jobs
        if number_matched is not None:
            document["numberMatched"] = number_matched
        return document
    if "jobID" in document:
        return _with_links(_clean_job(document), base_url, ui_url)
    return None


def dismissed_document(document: dict[str, Any]) -> dict[str, Any]:
    """The answer of pygeoapi to ``DELETE /jobs/{id}`` as a statusInfo (``type`` is required)."""
    document.setdefault("type", "process")
    return document


def add_conformance(document: dict[str, Any]) -> dict[str, Any]:
    """The conformance declaration with the classes pygeoapi leaves out."""
    classes = list(document.get("conformsTo", []))
    document["conformsTo"] = classes + [c for c in EXTRA_CONFORMANCE if c not in classes]
    return document


def monitor_links(job_url: str, *, results: bool = True) -> list[tuple[str, str]]:
    """``Link`` headers pointing an execution response at its job (and its results).

    OGC /req/core/process-execute-sync-*: a client can follow ``rel=monitor``
    to the status document whatever the execution mode.
    """
    links = [("Link", f'<{job_url}>; rel="monitor"; type="{JSON}"; title="Job status"')]
    if results:
        links.append(("Link", f'<{job_url}/results>; rel="{RESULTS_REL}"; title="Job results"'))
    return links


def dumps(document: Any, pretty: bool) -> bytes:
    """A JSON body, indented like pygeoapi's when ``server.pretty_print`` is on."""
    return json.dumps(document, indent=4 if pretty else None).encode("utf-8")


def offer_reference(document: dict[str, Any]) -> None:
    """List ``reference`` in the ``outputTransmission`` of a process (or of a list of them).

    Every output of a job is stored by the manager, so each can be given as
    a link (OGC 1.0 ``transmissionMode: reference``).
    """
    found = document.get("processes")
    described = found if isinstance(found, list) else [document]
    for process in described:
        if isinstance(process, dict) and "id" in process:
            modes = list(process.get("outputTransmission") or ["value"])
            process["outputTransmission"] = modes + [m for m in ("reference",) if m not in modes]
