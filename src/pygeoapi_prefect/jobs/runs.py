"""How a Prefect flow run is an OGC job: tags, labels and the state table.

A job is a flow run tagged ``pygeoapi`` and ``pygeoapi.process:<id>``; the job
id is the flow run id. Progress and the output media type live in the run's
labels, so the job list needs no query beyond one page of flow runs.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pygeoapi.util import JobStatus

__all__ = [
    "ERROR_LABEL",
    "JOB_TAG",
    "LOGS_REL",
    "STATUS_BY_STATE",
    "default_message",
    "error_label",
    "job_failure",
    "job_from_flow_run",
    "job_tags",
    "normalise_job_id",
    "process_id_of",
    "run_duration",
    "new_job_labels",
    "status_document",
    "status_links",
]

JOB_TAG = "pygeoapi"
PROCESS_TAG_PREFIX = "pygeoapi.process:"
#: Replaces JOB_TAG when a job is dismissed through the OGC API: the run stays
#: in Prefect as history, but is no longer a pygeoapi job.
DISMISSED_TAG = "pygeoapi.dismissed"
PROGRESS_LABEL = "pygeoapi.progress"
MESSAGE_LABEL = "pygeoapi.message"
MIMETYPE_LABEL = "pygeoapi.mimetype"
RESPONSE_LABEL = "pygeoapi.response"
#: The job list URL of the pygeoapi that made the job: the job is at
#: ``<label value>/<flow run id>`` (see PrefectManager.jobs_url).
JOBS_URL_LABEL = "pygeoapi.jobs_url"

#: A failed job's HTTP status and OGC exception code, ``"<status> <code>"``
#: (set only when the process raised a pygeoapi error with its own; else 500
#: ``NoApplicableCode``): what ``GET /jobs/{id}/results`` answers.
ERROR_LABEL = "pygeoapi.error"
#: The OGC link relation of a job's log (``GET /jobs/{id}/logs``); OGC API -
#: Processes registers none (see docs/operating.md, "Logs").
LOGS_REL = "http://www.opengis.net/def/rel/ogc/1.0/job-log"

#: The pygeoapi instance that accepted an async job (``local.instance``).
INSTANCE_LABEL = "pygeoapi.instance"
#: The media type of a job whose run has no MIMETYPE_LABEL.
DEFAULT_MIMETYPE = "application/json"

#: By Prefect state type (the names of ``prefect.client.schemas.objects.StateType``, as
#: plain strings: importing Prefect costs the local pool's template ~60 MiB).
STATUS_BY_STATE: dict[str, JobStatus] = {
    "SCHEDULED": JobStatus.accepted,
    "PENDING": JobStatus.accepted,
    "RUNNING": JobStatus.running,
    # A paused run is still a job in progress: it waits for input or a resume.
    "PAUSED": JobStatus.running,
    # A cancel was asked for (dismiss, Prefect UI): no result will come, and the
    # infrastructure is being stopped; the client sees the dismissal at once.
    "CANCELLING": JobStatus.dismissed,
    "CANCELLED": JobStatus.dismissed,
    "COMPLETED": JobStatus.successful,
    "FAILED": JobStatus.failed,
    # The infrastructure died under the run (killed worker, lost heartbeat).
    "CRASHED": JobStatus.failed,
}

_TERMINAL = {JobStatus.successful, JobStatus.failed, JobStatus.dismissed}
_DEFAULT_MESSAGES = {
    JobStatus.accepted: "Job accepted and waiting to run",
    JobStatus.running: "Job running",
    JobStatus.successful: "Job complete",
    JobStatus.failed: "Job failed",
    JobStatus.dismissed: "Job dismissed",
}


def default_message(status: str) -> str:
    """The message of a job in ``status`` that has none of its own."""
    return _DEFAULT_MESSAGES[JobStatus(status)]


def error_label(status: int, code: str) -> dict[str, str]:
    """The labels recording a failed job's own status and code; none for the default."""
    if (int(status), code) == (500, "NoApplicableCode"):
        return {}
    return {ERROR_LABEL: f"{int(status)} {code}"}


def job_failure(labels: dict[str, Any]) -> tuple[int, str]:
    """A failed job's HTTP status and OGC exception code (500 NoApplicableCode unless recorded)."""
    status, _, code = str(labels.get(ERROR_LABEL) or "").partition(" ")
    if status.isdigit() and 400 <= int(status) <= 599 and code:
        return int(status), code
    return 500, "NoApplicableCode"


def job_tags(process_id: str, owner: str | None = None) -> list[str]:
    """The tags that make a flow run a job of ``process_id`` (owned by ``owner``, a tag).

    See :mod:`pygeoapi_prefect.jobs.owners` for owner tags.
    """
    return [JOB_TAG, PROCESS_TAG_PREFIX + process_id] + ([owner] if owner else [])


def process_id_of(tags: list[str]) -> str | None:
    """The process id named by a flow run's tags, if any."""
    for tag in tags:
        if tag.startswith(PROCESS_TAG_PREFIX):
            return tag[len(PROCESS_TAG_PREFIX) :]
    return None


def normalise_job_id(job_id: str) -> str | None:
    """The canonical form of a job id, or ``None`` if it cannot be one.

    Job ids are flow run UUIDs. Checking this first keeps path separators,
    ``..`` and other junk away from Prefect and from the result store.
    """
    try:
        return str(uuid.UUID(str(job_id)))
    except ValueError:
        return None


def _percent(value: Any) -> int:
    try:
        return max(0, min(100, int(float(value))))
    except (TypeError, ValueError):
        return 0


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def run_duration(run: dict[str, Any], now: datetime) -> float | None:
    """Seconds a flow run has run (until ``now`` if it still runs); None if never started."""
    if not run.get("start_time"):
        return None
    end = _parse(run["end_time"]) if run.get("end_time") else now
    return max(0.0, (end - _parse(run["start_time"])).total_seconds())


def job_from_flow_run(run: dict[str, Any]) -> dict[str, Any]:
    """Pygeoapi's job dict for a flow run of the Prefect REST API.

    Timestamps that do not apply (``started`` of a queued job, ``finished`` of
    a running one) are empty strings: pygeoapi's API layer sorts on
    ``started`` and reads every key, so ``None`` would break it;
    :mod:`pygeoapi_prefect.web.documents` leaves empty keys out of responses.
    """
    state = run.get("state") or {}
    status = STATUS_BY_STATE[str(run.get("state_type") or state.get("type"))]
    labels = run.get("labels") or {}
    if status is JobStatus.accepted and _percent(labels.get(PROGRESS_LABEL)) > 0:
        # Progress comes from the job's own process: it runs, though a local
        # job is recorded Running only after local.async_visible_after.
        status = JobStatus.running
    updated = state.get("timestamp") or run.get("updated") or run["created"]
    finished = (run.get("end_time") or updated) if status in _TERMINAL else ""
    started = run.get("start_time") or ""
    if not started and status in (JobStatus.successful, JobStatus.failed):
        # Recorded in one call after it ran (a fast sync job).
        started = finished
    # A run created directly in its final state gets state timestamps a
    # fraction of a millisecond before its row's creation time: keep
    # created <= started <= finished, as a client expects.
    if started:
        started = max(run["created"], started)
    if finished:
        finished = max(started, finished)
    progress = labels.get(PROGRESS_LABEL)
    if status is JobStatus.successful:
        progress = 100
    return {
        "type": "process",
        "identifier": run["id"],
        "process_id": process_id_of(run.get("tags") or []) or "",
        "status": status.value,
        "message": (
            (labels.get(MESSAGE_LABEL) if status is JobStatus.running else None)
            or state.get("message")
            or _DEFAULT_MESSAGES[status]
        ),
        "progress": _percent(progress),
        "created": run["created"],
        "started": started,
        "finished": finished,
        "updated": updated,
        # What GET /jobs/{id}/results serves: a results document is JSON.
        "mimetype": (
            DEFAULT_MIMETYPE
            if labels.get(RESPONSE_LABEL) == "document"
            else labels.get(MIMETYPE_LABEL) or DEFAULT_MIMETYPE
        ),
        "location": None,
        "response": labels.get(RESPONSE_LABEL) or "raw",
        "flow_run_name": run.get("name"),
        "failure": job_failure(labels) if status is JobStatus.failed else None,
        "deployment_id": run.get("deployment_id"),
    }


def new_job_labels(labels: dict[str, Any], jobs_url: str | None) -> dict[str, Any]:
    """A new job's labels, with the way back to pygeoapi (``JOBS_URL_LABEL``) when known."""
    return {**labels, JOBS_URL_LABEL: jobs_url} if jobs_url else labels


def status_links(
    job_id: str, status: str, jobs_url: str, ui_url: str | None = None
) -> list[dict[str, str]]:
    """The links of a statusInfo: the job itself, its results once it has some, its flow run.

    The one place they are made, for the API's documents and the callbacks'.
    """
    job_url = f"{jobs_url}/{job_id}"
    links = [
        {
            "href": f"{job_url}?f=json",
            "rel": "self",
            "type": "application/json",
            "title": "This job",
        }
    ]
    if status == JobStatus.successful.value:
        links.append(
            {
                "href": f"{job_url}/results?f=json",
                "rel": "http://www.opengis.net/def/rel/ogc/1.0/results",
                "type": "application/json",
                "title": f"Results of job {job_id}",
            }
        )
    links.append(
        {
            "href": f"{job_url}/logs?f=json",
            "rel": LOGS_REL,
            "type": "application/json",
            "title": f"Log of job {job_id}",
        }
    )
    if ui_url:
        links.append(
            {
                "href": ui_url,
                "rel": "related",
                "type": "text/html",
                "title": "This job's flow run in the Prefect UI",
            }
        )
    return links


def status_document(
    job: dict[str, Any], *, jobs_url: str | None = None, ui_url: str | None = None
) -> dict[str, Any]:
    """An OGC statusInfo document for a job dict (keys without a value left out).

    With ``jobs_url`` (the pygeoapi job list the job belongs to) it carries
    the same links as the API's status document.
    """
    document = {
        "type": "process",
        "jobID": job["identifier"],
        "processID": job["process_id"],
        "status": job["status"],
        "message": job["message"],
        "progress": job["progress"],
        "created": job["created"],
        "started": job["started"],
        "finished": job["finished"],
        "updated": job["updated"],
    }
    if jobs_url:
        document["links"] = status_links(job["identifier"], job["status"], jobs_url, ui_url)
    return {key: value for key, value in document.items() if value not in (None, "")}
