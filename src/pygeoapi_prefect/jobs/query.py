"""The job-list filters of OGC API - Processes 1.0 (conformance class job-list).

``processID``, ``status``, ``datetime``, ``minDuration``, ``maxDuration``,
``type`` (and our ``owner``) are parsed here into a :class:`JobQuery`. pygeoapi 0.24's API layer
passes only ``limit`` and ``offset`` to the manager, so
:mod:`pygeoapi_prefect.web.contract` parses the filters of each ``GET /jobs``
and hands them over in the request's
:class:`~pygeoapi_prefect.jobs.exchange.RequestExchange`;
:meth:`PrefectManager.get_jobs` also takes one directly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pygeoapi.util import JobStatus

from pygeoapi_prefect.errors import InvalidParameter

__all__ = ["FILTER_PARAMETERS", "JobQuery", "parse_job_query"]

FILTER_PARAMETERS = (
    "processID",
    "status",
    "datetime",
    "minDuration",
    "maxDuration",
    "type",
    "owner",
)
_OPEN = ("", "..")


@dataclass(frozen=True)
class JobQuery:
    """Filters of a job list; ``None`` means "any"."""

    process_ids: tuple[str, ...] | None = None
    statuses: tuple[JobStatus, ...] | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    min_duration: float | None = None
    max_duration: float | None = None
    types: tuple[str, ...] | None = None
    #: A user id: only that user's jobs (``server.manager.auth``; admins may
    #: name anyone, everyone else sees only their own jobs anyway).
    owner: str | None = None

    @property
    def filters_durations(self) -> bool:
        """Whether the query needs job durations, which Prefect cannot filter on."""
        return self.min_duration is not None or self.max_duration is not None


def _values(raw: Iterable[str]) -> tuple[str, ...]:
    # Both `status=a,b` (explode=false) and `status=a&status=b` are accepted.
    return tuple(part.strip() for value in raw for part in value.split(",") if part.strip())


def _instant(text: str, name: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidParameter(f"{name}: {text!r} is not an RFC 3339 date-time") from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _seconds(text: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise InvalidParameter(f"{name}: {text!r} is not a number of seconds") from exc
    if value < 0 or value != value:
        raise InvalidParameter(f"{name}: must be zero or more seconds, got {text!r}")
    return value


def parse_job_query(params: Mapping[str, list[str]]) -> JobQuery:
    """Parse the job-list filters of a query string (each key to its values).

    Raises:
        InvalidParameter: naming the parameter and the bad value.
    """
    fields: dict[str, Any] = {}
    if params.get("processID"):
        fields["process_ids"] = _values(params["processID"])
    if params.get("status"):
        statuses = []
        for value in _values(params["status"]):
            try:
                statuses.append(JobStatus(value))
            except ValueError as exc:
                allowed = ", ".join(status.value for status in JobStatus)
                raise InvalidParameter(f"status: {value!r} is not one of {allowed}") from exc
        fields["statuses"] = tuple(statuses)
    if params.get("datetime"):
        text = params["datetime"][-1]
        if "/" in text:
            start, _, end = text.partition("/")
            if start in _OPEN and end in _OPEN:
                raise InvalidParameter("datetime: an interval needs at least one end")
            after = None if start in _OPEN else _instant(start, "datetime")
            before = None if end in _OPEN else _instant(end, "datetime")
            if after and before and after > before:
                raise InvalidParameter(f"datetime: {text!r} ends before it starts")
        else:
            after = before = _instant(text, "datetime")
        fields["created_after"], fields["created_before"] = after, before
    if params.get("minDuration"):
        fields["min_duration"] = _seconds(params["minDuration"][-1], "minDuration")
    if params.get("maxDuration"):
        fields["max_duration"] = _seconds(params["maxDuration"][-1], "maxDuration")
    if params.get("type"):
        fields["types"] = _values(params["type"])
    if params.get("owner"):
        fields["owner"] = params["owner"][-1]
    return JobQuery(**fields)
