"""Dismissing a job through the OGC API: stop it, delete its results, forget it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pygeoapi.util import JobStatus

from pygeoapi_prefect.errors import PrefectManagerError
from pygeoapi_prefect.execution.notify import job_event
from pygeoapi_prefect.jobs import runs as jobs
from pygeoapi_prefect.jobs.exchange import current_exchange
from pygeoapi_prefect.jobs.listing import read_job_run
from pygeoapi_prefect.jobs.owners import owner_of
from pygeoapi_prefect.jobs.results import ResultStore
from pygeoapi_prefect.prefect.states import state

if TYPE_CHECKING:
    from pygeoapi_prefect.execution.engine import Engine

logger = logging.getLogger(__name__)

__all__ = ["DISMISS_MESSAGE", "dismiss"]

#: The message of the states a dismiss through the OGC API sets (the watcher skips them).
DISMISS_MESSAGE = "Dismissed through the OGC API"


def dismiss(engine: Engine, processes: Mapping[str, Any], job_id: str) -> None:
    """Dismiss a job: stop it, delete its results, and forget it.

    A job running in this process is killed, and its run ends Cancelled
    after the answer (the recorder thread writes it; the job is no job any
    more once its tag goes, which the answer waits for). Any other job is
    moved to Cancelled (queued here) or Cancelling before the answer, which
    Prefect will not let become Running or Completed any more, whichever
    pygeoapi process (or worker) holds it; the holder kills it and finishes
    it as Cancelled. The flow run stays in Prefect as history (tagged
    ``pygeoapi.dismissed``); for pygeoapi the job is gone (404).

    Raises:
        JobNotFound: no such job.

    """
    run = read_job_run(engine.api, processes, job_id)
    flow_run_id = run["id"]
    current_exchange().runs.pop(flow_run_id, None)  # changed below: read anew after
    cancelled = state("CANCELLED", DISMISS_MESSAGE)
    deferred = False
    if jobs.job_from_flow_run(run)["status"] in (JobStatus.accepted.value, JobStatus.running.value):
        runner = engine.runner_if_started
        claimed = runner is not None and runner.claimed(flow_run_id)
        if runner is not None and runner.holds(flow_run_id) and runner.dismiss(flow_run_id):
            # This process's: its process group is killed (or it is off the
            # queue), so it ends Cancelled at once. A running job was claimed
            # here (recorded Running or not yet, local.async_visible_after),
            # so nobody else starts it: its state can follow the answer. A
            # queued one is Cancelled first, so that another process that
            # queued it too is refused Running by Prefect.
            deferred = claimed or run.get("state_type") == "RUNNING"
            if not deferred:
                engine.api.set_state(flow_run_id, cancelled, force=True)
        else:
            # Cancelling: Prefect refuses Running and Completed from now on, whichever
            # process or worker holds the job; the holder kills it and ends it Cancelled.
            engine.api.set_state(flow_run_id, state("CANCELLING", DISMISS_MESSAGE), force=True)
            if runner is not None and runner.dismiss(flow_run_id):
                # It came to this process meanwhile, and nothing of it runs any more.
                engine.api.set_state(flow_run_id, cancelled, force=True)
    engine.store.delete(ResultStore.key(flow_run_id, owner_of(run.get("tags") or [])))
    # From the run read before: once its tag goes below, it is no job any more.
    job_event(engine, "dismissed", flow_run_id, run=run, message=DISMISS_MESSAGE)
    tags = [t for t in run.get("tags") or [] if t != jobs.JOB_TAG]
    engine.api.update_tags(flow_run_id, [jobs.DISMISSED_TAG, *tags])
    if deferred:
        engine.record_later(_cancel, engine, flow_run_id, cancelled)
    logger.info("dismissed job %s", flow_run_id)


def _cancel(engine: Engine, flow_run_id: str, cancelled: dict[str, Any]) -> None:
    # In the recorder: retried through an outage, as every accepted job's step.
    try:
        engine.persist(engine.api.set_state, flow_run_id, cancelled, force=True)
    except PrefectManagerError as exc:
        logger.error("dismissed job %s not recorded Cancelled in Prefect: %s", flow_run_id, exc)
