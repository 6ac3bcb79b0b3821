"""Callbacks of a job's steps, sent from wherever the step is recorded."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pygeoapi_prefect.errors import PrefectManagerError
from pygeoapi_prefect.jobs import runs as jobs
from pygeoapi_prefect.jobs.answers import Links, document
from pygeoapi_prefect.jobs.listing import read_job_run

if TYPE_CHECKING:
    from pygeoapi_prefect.execution.engine import Engine

logger = logging.getLogger(__name__)

__all__ = ["notify_results", "notify_status"]


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
    engine.callbacks.send(subscriber, "successUri", answer, job=job_id)
