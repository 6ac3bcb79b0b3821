"""Callbacks of a job's steps, sent from wherever the step is recorded."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pygeoapi_prefect.errors import PrefectManagerError
from pygeoapi_prefect.jobs import runs as jobs
from pygeoapi_prefect.jobs.answers import Links, document
from pygeoapi_prefect.jobs.listing import read_job_run

if TYPE_CHECKING:
    from pygeoapi_prefect.execution.engine import Engine

logger = logging.getLogger(__name__)

__all__ = ["EVENT_WAIT", "job_event", "notify_results", "notify_status"]

#: Seconds a job waits at most for an event that must go before its next step.
EVENT_WAIT = 1.0


def job_event(
    engine: Engine,
    kind: str,
    job_id: str,
    *,
    run: dict[str, Any] | None = None,
    progress: int | None = None,
    message: str | None = None,
) -> threading.Event | None:
    """Publish a job's step on the broker, if pygeoapi's ``pubsub`` is set (never blocks).

    Returns what is set once the event was sent (or dropped), if it was queued.
    """
    if engine.events is None or not job_id:
        return None
    return engine.events.publish(kind, job_id, run=run, progress=progress, message=message)


def notify_status(
    engine: Engine,
    processes: Mapping[str, Any],
    job_id: str,
    key: str,
    subscriber: dict[str, str] | None,
) -> None:
    """Send the job's status document to ``subscriber[key]`` (inProgressUri, failedUri)."""
    if not subscriber or not subscriber.get(key):
        return
    try:
        run = read_job_run(engine.api, processes, job_id)
        document = jobs.status_document(
            jobs.job_from_flow_run(run),
            jobs_url=(run.get("labels") or {}).get(jobs.JOBS_URL_LABEL),
            ui_url=engine.api.flow_run_url(job_id),
        )
    except PrefectManagerError as exc:  # a callback never fails a job
        logger.warning("no %s callback for job %s: %s", key, job_id, exc)
        return
    engine.callbacks.send(subscriber, key, document, job=job_id)


def notify_results(engine: Engine, job_id: str, subscriber: dict[str, str] | None) -> None:
    """Send the job's results document to ``subscriber["successUri"]``.

    ``job_id`` is the job's key in the result store (:meth:`ResultStore.key`).
    """
    if not subscriber or not subscriber.get("successUri"):
        return
    key = job_id
    job_id = key.rpartition("/")[2]
    try:
        run = engine.api.read_flow_run(job_id) or {}
        jobs_url = (run.get("labels") or {}).get(jobs.JOBS_URL_LABEL)
        presign = engine.config.results.presign_seconds
        links = Links(engine.store, key, job_id, jobs_url, presign)
        manifest = engine.store.read_manifest(key)
        answer = document(engine.store, key, manifest, links)
    except PrefectManagerError as exc:
        logger.warning("no successUri callback for job %s: %s", job_id, exc)
        return
    # The job id alone (the key may start with the owner's space).
    engine.callbacks.send(subscriber, "successUri", answer, job=job_id.rpartition("/")[2])
