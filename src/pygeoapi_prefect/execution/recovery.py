"""Taking over the queued jobs of server processes that stopped or died.

Every engine runs :func:`take_over` at start and every
``recovery.scan_seconds``: it reads the Pending jobs of this config's local
processes and the leases (:mod:`pygeoapi_prefect.execution.leases`), and
queues here every job whose holder is not alive: its lease was released by
a graceful stop, expired after a crash, or never existed (a job of an
earlier version, or of an instance that never came back). A run of a
deployment is never taken: it is Pending while its worker starts it, and
the worker's alone. The job's request comes from its flow run's
parameters. Two processes may both queue the same job; the claim at its
start lets only one run it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pygeoapi_prefect.metrics as metrics
from pygeoapi_prefect.execution.execute import JobRequest
from pygeoapi_prefect.execution.joblogs import limits_from
from pygeoapi_prefect.execution.leases import HOLDER_LABEL
from pygeoapi_prefect.execution.notify import job_event
from pygeoapi_prefect.execution.run_page import name_run, run_name
from pygeoapi_prefect.jobs import runs as jobs
from pygeoapi_prefect.jobs.owners import owner_of
from pygeoapi_prefect.prefect.states import state

if TYPE_CHECKING:
    from pygeoapi_prefect.execution.engine import Engine

logger = logging.getLogger(__name__)

__all__ = ["take_over"]

_PAGE = 200
#: At most this many queued jobs are looked at (oldest first) in one scan.
MAX_SCAN = 10_000
#: A job this young is left alone: its holder has just created it.
_SETTLE_SECONDS = 2.0


def _fail(engine: Engine, process_id: str, job_id: str, message: str) -> None:
    logger.warning("job %s cannot be taken over: %s", job_id, message)
    engine.api.set_state(job_id, state("FAILED", message))
    metrics.job_finished(process_id, "failed")
    job_event(engine, "failed", job_id, message=message)


def _request(engine: Engine, run: dict[str, Any], resource: dict[str, Any]) -> JobRequest | None:
    job_id = str(run["id"])
    parameters = run.get("parameters") or {}
    if "inputs" not in parameters:
        _fail(
            engine,
            jobs.process_id_of(run.get("tags") or []) or "",
            job_id,
            "The pygeoapi process that accepted the job stopped, and the job's request was "
            "too large to keep in Prefect; submit it again",
        )
        return None
    labels = run.get("labels") or {}
    return JobRequest(
        job_id=job_id,
        process_id=jobs.process_id_of(run.get("tags") or []) or "",
        process_conf=resource,
        inputs=parameters.get("inputs") or {},
        requested_outputs=parameters.get("outputs"),
        response=str(parameters.get("response") or labels.get(jobs.RESPONSE_LABEL) or "raw"),
        subscriber=parameters.get("subscriber"),
        logs=limits_from(engine.config),
        jobs_url=labels.get(jobs.JOBS_URL_LABEL),
        events=engine.events.settings if engine.events else None,
        owner=owner_of(run.get("tags") or []),
        references=engine.config.references.model_dump(),
    )


def _orphans(engine: Engine, local: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    flow_runs = {
        "tags": {"all_": [jobs.JOB_TAG], "any_": [jobs.job_tags(pid)[1] for pid in local]},
        "state": {"type": {"any_": ["PENDING"]}},
        # A deployment's run is its worker's, Pending while the worker starts
        # it, whatever runs the same process locally here.
        "deployment_id": {"is_null_": True},
        "expected_start_time": {
            "before_": (datetime.now(UTC) - timedelta(seconds=_SETTLE_SECONDS)).isoformat()
        },
    }
    live, stale = engine.leases.live_holders()
    live.add(engine.holder)
    found: list[dict[str, Any]] = []
    for offset in range(0, MAX_SCAN, _PAGE):
        page = engine.api.filter_flow_runs(
            flow_runs, sort="EXPECTED_START_TIME_ASC", limit=_PAGE, offset=offset
        )
        found += [r for r in page if (r.get("labels") or {}).get(HOLDER_LABEL) not in live]
        if len(page) < _PAGE:
            break
    if stale and not found:
        engine.leases.forget(stale)
    return found


def take_over(engine: Engine) -> int:
    """Queue here the queued jobs of dead or stopped holders; returns how many."""
    local = {
        pid: resource
        for pid, resource in engine.processes().items()
        if not (resource.get("processor") or {}).get("deployment")
    }
    if not local:
        return 0
    orphans = _orphans(engine, local)
    if not orphans:
        return 0
    runner = engine.runner
    taken = 0
    for run in orphans:
        job_id = str(run["id"])
        if runner.holds(job_id):
            continue
        resource = local.get(jobs.process_id_of(run.get("tags") or []) or "")
        if resource is None:
            continue
        request = _request(engine, run, resource)
        if request is None:
            continue
        # Ours now: other scans leave it alone while we live.
        engine.api.update_labels(job_id, {HOLDER_LABEL: engine.holder})
        if runner.submit(request):
            taken += 1
            if engine.config.prefect_ui.run_names and run.get("name") != run_name(
                request.process_id, job_id
            ):
                # Its accepting process died before naming it (or never did).
                name_run(engine.api, request.process_id, job_id)
    return taken
