"""pygeoapi's HTML job and process pages, rendered from the fixed JSON documents.

pygeoapi 0.24 renders ``/jobs``, ``/jobs/{id}`` and ``/processes/{id}`` as
HTML straight from what the manager returns, before
:mod:`pygeoapi_prefect.web.contract` can fix the documents: the job list comes
sorted by start time (queued jobs last, after older finished ones), and a
status page lacks the links of the JSON document (the Prefect UI, a failed
job's own link) while showing a results link for jobs that have none yet.

Here such a page is rendered with pygeoapi's own templates, from the JSON
document the API serves for the same request with the same fixes: the HTML
and the JSON say the same.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any
from urllib.parse import urlencode

from pygeoapi.api import SYSTEM_LOCALE, APIRequest
from pygeoapi.api import processes as processes_api
from pygeoapi.util import get_current_datetime, render_j2_template

logger = logging.getLogger(__name__)

__all__ = ["JOB_LIST_REL", "process_job_links", "render_html"]

#: The OGC link relation of a job list.
JOB_LIST_REL = "http://www.opengis.net/def/rel/ogc/1.0/job-list"

#: Fixes a JSON document of the API; ``None`` when it is not one to fix.
Fix = Callable[[dict[str, Any]], dict[str, Any] | None]
#: pygeoapi's answer: headers, status, body.
Answer = tuple[dict[str, str], int, str | bytes]


def render_html(
    api: Any,
    parts: list[str],
    html_request: APIRequest,
    json_request: APIRequest,
    fix: Fix,
) -> Answer | None:
    """The HTML page of a job list, job or process, or ``None`` to let pygeoapi answer.

    ``None`` is returned for other paths, and when the JSON answer is not a
    200 (pygeoapi then renders the error page itself).

    Args:
        api: pygeoapi's ``API`` object.
        parts: the path's segments (``["jobs", "<id>"]``).
        html_request: the request, asking for HTML.
        json_request: the same request, asking for JSON.
        fix: the fixes of :mod:`pygeoapi_prefect.web.documents` for a job document.

    """
    data: dict[str, Any]
    if parts[:1] == ["jobs"] and len(parts) <= 2:
        job_id = parts[1] if len(parts) == 2 else None
        _, status, content = processes_api.get_jobs(api, json_request, job_id)
        if status != HTTPStatus.OK:
            return None
        document = fix(json.loads(content))
        if document is None:
            return None
        offset = json_request.params.get("offset") or 0
        data = {
            "jobs": document,
            # Validated by the JSON answer (a bad offset is a 400).
            "offset": int(offset),
            "now": get_current_datetime(),
        }
        template, templates = (
            "jobs/job.html" if job_id else "jobs/index.html",
            api.config["server"]["templates"],
        )
    elif parts[:1] == ["processes"] and len(parts) == 2:
        _, status, content = processes_api.describe_processes(api, json_request, parts[1])
        if status != HTTPStatus.OK:
            return None
        data = process_job_links(json.loads(content), api.base_url)
        template, templates = "processes/process.html", api.get_dataset_templates(parts[1])
    else:
        return None
    headers = html_request.get_response_headers(SYSTEM_LOCALE, **api.api_headers)
    page = render_j2_template(api.tpl_config, templates, template, data, html_request.locale)
    return headers, HTTPStatus.OK, page


def process_job_links(description: dict[str, Any], base_url: str) -> dict[str, Any]:
    """Add links to the jobs of this process (the job list filtered by ``processID``)."""
    process_id = description.get("id")
    if not process_id:
        return description
    links = description.setdefault("links", [])
    query = urlencode({"processID": process_id})
    for fmt, media_type in (("html", "text/html"), ("json", "application/json")):
        links.append(
            {
                "href": f"{base_url}/jobs?{query}&f={fmt}",
                "rel": JOB_LIST_REL,
                "type": media_type,
                "title": f"Jobs of this process as {fmt.upper()}",
            }
        )
    return description
