"""Dismissing a job through the OGC API: stop it, delete its results, forget it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pygeoapi.util import JobStatus

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

    The run is moved to Cancelling, which Prefect will not let become
    Running or Completed any more, whichever pygeoapi process (or worker)
    holds it; the holder kills it and finishes it as Cancelled. The flow run
    stays in Prefect as history (tagged ``pygeoapi.dismissed``); for pygeoapi
    the job is gone (404).

    Raises:
        JobNotFound: no such job.

    """
    run = read_job_run(engine.api, processes, job_id)
    flow_run_id = run["id"]
    current_exchange().runs.pop(flow_run_id, None)  # changed below: read anew after
    if jobs.job_from_flow_run(run)["status"] in (JobStatus.accepted.value, JobStatus.running.value):
        runner = engine.runner_if_started
        if runner is not None and runner.holds(flow_run_id) and runner.dismiss(flow_run_id):
            # This process's: its process group is killed (or it is off the
            # queue), so it ends Cancelled at once. Another process that
            # queued it too is refused Running by Prefect from now on.
            engine.api.set_state(flow_run_id, state("CANCELLED", DISMISS_MESSAGE), force=True)
        else:
            # Cancelling: Prefect refuses Running and Completed from now on, whichever
            # process or worker holds the job; the holder kills it and ends it Cancelled.
            engine.api.set_state(flow_run_id, state("CANCELLING", DISMISS_MESSAGE), force=True)
            if runner is not None and runner.dismiss(flow_run_id):
                # It came to this process meanwhile, and nothing of it runs any more.
                engine.api.set_state(flow_run_id, state("CANCELLED", DISMISS_MESSAGE), force=True)
    engine.store.delete(ResultStore.key(flow_run_id, owner_of(run.get("tags") or [])))
    # From the run read before: once its tag goes below, it is no job any more.
    job_event(engine, "dismissed", flow_run_id, run=run, message=DISMISS_MESSAGE)
    tags = [t for t in run.get("tags") or [] if t != jobs.JOB_TAG]
    engine.api.update_tags(flow_run_id, [jobs.DISMISSED_TAG, *tags])
    logger.info("dismissed job %s", flow_run_id)
