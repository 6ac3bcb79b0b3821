"""``GET /jobs/{jobId}/logs``: a job's log lines, paged, as JSON or plain text.

The lines are the flow run's logs in Prefect (what the job logged and
printed, and for a deployed job also what Prefect's engine logged about it),
oldest first. ``limit`` (1-1000, 100 by default) and ``offset`` page them;
``f=json`` (the default) answers::

    {"jobID": "...", "processID": "...", "status": "running",
     "logs": [{"timestamp": "...", "level": "INFO", "logger": "...", "message": "..."}],
     "numberReturned": 1, "links": [self, next?, prev?, up, alternate]}

and ``f=txt`` (or ``Accept: text/plain``) one line per record, with the next
page in a ``Link`` header. The job is looked up like every ``/jobs/{jobId}``
route, so an unknown (or dismissed) job is a 404 ``no-such-job``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from pygeoapi.api import SYSTEM_LOCALE
from pygeoapi.formats import F_JSON
from pygeoapi.process.base import JobNotFoundError

from pygeoapi_prefect.errors import InvalidParameter, JobNotFound
from pygeoapi_prefect.web import documents

if TYPE_CHECKING:
    from pygeoapi_prefect.web.contract import Contract, WebRequest, WebResponse

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "answer"]

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
TEXT = "text/plain; charset=utf-8"


def _one(request: WebRequest, name: str) -> str | None:
    values = [value for key, value in request.query if key == name]
    if len(values) > 1:
        raise InvalidParameter(f"Give {name} once, not {len(values)} times")
    return values[0] if values else None


def _number(request: WebRequest, name: str, default: int, low: int, high: int) -> int:
    raw = _one(request, name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidParameter(f"{name} must be a whole number, got {raw!r}") from None
    if not low <= value <= high:
        raise InvalidParameter(f"{name} must be between {low} and {high}, got {value}")
    return value


def _wants_text(request: WebRequest) -> bool:
    fmt = (_one(request, "f") or "").strip().lower()
    if fmt in ("txt", "text"):
        return True
    if fmt == "json":
        return False
    if fmt:
        raise InvalidParameter(f"f must be json or txt for a job's log, got {fmt!r}")
    # Accept: the better of the two we have, JSON when it is a tie.
    best: dict[str, float] = {}
    for part in request.headers.get("accept", "").split(","):
        media, *params = (piece.strip() for piece in part.split(";"))
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        best[media.lower()] = max(best.get(media.lower(), 0.0), quality)
    return best.get("text/plain", 0.0) > best.get("application/json", 0.0)


def _lookup(contract: Contract, job_id: str) -> dict[str, Any]:
    manager = contract.api.manager
    if not hasattr(manager, "get_job_logs"):
        raise JobNotFound(f"No log for job {job_id!r}: this process manager keeps none")
    try:
        job: dict[str, Any] = manager.get_job(job_id)  # the one job lookup of /jobs/{id}
    except JobNotFoundError as exc:
        raise JobNotFound(f"No job with id {job_id!r}") from exc
    return job


def _text(lines: list[dict[str, Any]]) -> bytes:
    out = []
    for line in lines:
        message = str(line["message"]).replace("\n", "\n    ")
        out.append(f"{line['timestamp']} {line['level']:<8} {line['logger']}: {message}\n")
    return "".join(out).encode("utf-8")


def answer(contract: Contract, request: WebRequest, job_id: str) -> WebResponse:
    """The log page of a job (raises our errors: the contract maps them)."""
    from pygeoapi_prefect.web.contract import WebResponse

    text = _wants_text(request)
    limit = _number(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = _number(request, "offset", 0, 0, 10**9)
    job = _lookup(contract, job_id)
    identifier = str(job["identifier"])
    lines = contract.api.manager.get_job_logs(identifier, limit=limit + 1, offset=offset)
    more = len(lines) > limit
    lines = lines[:limit]
    base = f"{contract.api.base_url}/jobs/{identifier}"

    def page(fmt: str, at: int) -> str:
        return f"{base}/logs?{urlencode({'f': fmt, 'limit': limit, 'offset': at})}"

    fmt = "txt" if text else "json"
    kind = TEXT if text else documents.JSON
    links = [{"href": page(fmt, offset), "rel": "self", "type": kind, "title": "This page"}]
    if more:
        links.append(
            {"href": page(fmt, offset + limit), "rel": "next", "type": kind, "title": "Next page"}
        )
    if offset:
        links.append(
            {
                "href": page(fmt, max(0, offset - limit)),
                "rel": "prev",
                "type": kind,
                "title": "Previous page",
            }
        )
    other, other_kind = ("json", documents.JSON) if text else ("txt", TEXT)
    links += [
        {"href": f"{base}?f=json", "rel": "up", "type": documents.JSON, "title": "The job"},
        {"href": page(other, offset), "rel": "alternate", "type": other_kind, "title": "This page"},
    ]
    api_request = contract._api_request(request, fmt=F_JSON)
    headers = api_request.get_response_headers(SYSTEM_LOCALE, **contract.api.api_headers)
    headers.pop("Content-Encoding", None)
    headers["Content-Type"] = kind
    header_list = list(headers.items())
    if text:
        for link in links[1:-2]:
            header_list.append(("Link", f'<{link["href"]}>; rel="{link["rel"]}"'))
        return WebResponse(200, header_list, _text(lines))
    document = {
        "jobID": identifier,
        "processID": job.get("process_id"),
        "status": job.get("status"),
        "logs": lines,
        "numberReturned": len(lines),
        "links": links,
    }
    body = json.dumps(document, indent=4 if contract.api.pretty_print else None).encode("utf-8")
    return WebResponse(200, header_list, body)
