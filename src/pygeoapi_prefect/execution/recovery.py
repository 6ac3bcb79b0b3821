"""Taking back, after a restart, the async jobs an instance had accepted.

An async job waits in the memory of the instance that accepted it until a
worker process takes it. Each such job carries the instance's identity (flow
run label ``pygeoapi.instance``, see ``server.manager.local.instance``); when
an instance starts, it queues again its jobs that are still Pending and were
created before it started. Their request is in the flow run's parameters.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pygeoapi_prefect.execution.execute import JobRequest
from pygeoapi_prefect.jobs import runs as jobs

if TYPE_CHECKING:
    from pygeoapi_prefect.manager import PrefectManager

logger = logging.getLogger(__name__)

__all__ = ["running_transition_id", "take_back"]

_PAGE = 200
#: At most this many jobs are looked at (oldest first) at one start.
MAX_SCAN = 10_000
_NAMESPACE = uuid.UUID("8f0c3f5e-6d1f-4a8e-9a53-3c5a1b0e7d21")


def running_transition_id(job_id: str) -> str:
    """The transition id of a job's move to Running: the same in every instance.

    Prefect rejects a transition whose id equals that of the run's current
    state, so only the first of two instances proposing Running runs the job.
    """
    return str(uuid.uuid5(_NAMESPACE, f"{job_id}/running"))


def _fail(manager: PrefectManager, job_id: str, message: str) -> None:
    logger.warning("job %s cannot be taken back: %s", job_id, message)
    manager.api.set_state(job_id, {"type": "FAILED", "name": "Failed", "message": message})


def _request(manager: PrefectManager, run: dict[str, Any]) -> JobRequest | None:
    job_id = str(run["id"])
    process_id = jobs.process_id_of(run.get("tags") or []) or ""
    resource = manager.processes.get(process_id)
    if resource is None:
        _fail(manager, job_id, f"The process {process_id!r} is no longer configured")
        return None
    parameters = run.get("parameters") or {}
    if "inputs" not in parameters:
        _fail(
            manager,
            job_id,
            "The job was accepted before a restart of pygeoapi, and its request was too "
            "large to keep; submit it again",
        )
        return None
    labels = run.get("labels") or {}
    return JobRequest(
        job_id=job_id,
        process_id=process_id,
        process_conf=resource,
        inputs=parameters.get("inputs") or {},
        requested_outputs=parameters.get("outputs"),
        response=str(parameters.get("response") or labels.get(jobs.RESPONSE_LABEL) or "raw"),
        subscriber=parameters.get("subscriber"),
    )


def take_back(manager: PrefectManager, born: datetime) -> int:
    """Queue again this instance's Pending jobs created before ``born``; returns how many."""
    me = manager.config.instance_id()
    flow_runs = {
        "tags": {"all_": [jobs.JOB_TAG]},
        "state": {"type": {"any_": ["PENDING"]}},
        "expected_start_time": {"before_": born.isoformat()},
    }
    mine: list[dict[str, Any]] = []
    for offset in range(0, MAX_SCAN, _PAGE):
        page = manager.api.filter_flow_runs(
            flow_runs, sort="EXPECTED_START_TIME_ASC", limit=_PAGE, offset=offset
        )
        mine += [r for r in page if (r.get("labels") or {}).get(jobs.INSTANCE_LABEL) == me]
        if len(page) < _PAGE:
            break
    if not mine:
        return 0
    runner = manager.runner
    taken = 0
    for run in mine:
        request = _request(manager, run)
        if request is not None:
            runner.submit(request)
            taken += 1
    return taken
