"""Local async jobs: accepted here, queued in this process, started at most once.

A job is created Pending with this process's holder id (label
``pygeoapi.holder``) and queued in the local pool. When a worker is free,
:func:`_started` *claims* the job (:func:`pygeoapi_prefect.execution.leases.claim`)
and only the winner moves it to Running and runs it; a job taken over by
another process after this one stopped (or was thought dead) is started by
one of them only. The hooks then record the outcome and send callbacks.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import pygeoapi_prefect.metrics as metrics
from pygeoapi_prefect.execution import relay, run_page
from pygeoapi_prefect.execution.execute import JobRequest, Outcome
from pygeoapi_prefect.execution.joblogs import limits_from
from pygeoapi_prefect.execution.leases import HOLDER_LABEL, claim
from pygeoapi_prefect.execution.local import JobHooks
from pygeoapi_prefect.execution.notify import EVENT_WAIT, job_event, notify_results, notify_status
from pygeoapi_prefect.jobs import runs as jobs
from pygeoapi_prefect.prefect.api import REJECTED
from pygeoapi_prefect.prefect.states import running, state

if TYPE_CHECKING:
    from pygeoapi_prefect.execution.engine import Engine

logger = logging.getLogger(__name__)

__all__ = ["MAX_PARAMETERS_BYTES", "job_parameters", "local_hooks", "submit", "summarise"]

#: Execute requests larger than this are not copied into the flow run's
#: parameters (they still run); Prefect caps parameters at 512 KB by default.
MAX_PARAMETERS_BYTES = 256 * 1024


def job_parameters(
    inputs: dict[str, Any],
    requested_outputs: dict[str, Any] | None,
    response: str,
    subscriber: dict[str, str] | None,
) -> dict[str, Any]:
    """The flow run's parameters: the request, so another process can run it; {} if huge."""
    parameters = {
        "inputs": inputs,
        "outputs": requested_outputs,
        "response": response,
        "subscriber": subscriber,
    }
    try:
        size = len(json.dumps(parameters, default=str))
    except (TypeError, ValueError):
        return {}
    return parameters if size <= MAX_PARAMETERS_BYTES else {}


def submit(
    engine: Engine,
    process_id: str,
    inputs: dict[str, Any],
    requested_outputs: dict[str, Any] | None,
    response: str,
    subscriber: dict[str, str] | None,
    *,
    jobs_url: str | None,
    owner: str | None = None,
) -> str:
    """Accept an async job: create its run Pending and queue it here; returns its id.

    ``owner`` is the owner tag of the caller (:mod:`pygeoapi_prefect.jobs.owners`).
    """
    runner = engine.runner  # started before the job exists: a failure leaves no orphan run
    labels = jobs.new_job_labels(
        {
            jobs.PROGRESS_LABEL: 0,
            jobs.RESPONSE_LABEL: response,
            jobs.INSTANCE_LABEL: engine.config.instance_id(),
            HOLDER_LABEL: engine.holder,
        },
        jobs_url,
    )
    run = engine.api.create_flow_run(
        flow_name=process_id,
        state=state("PENDING", "Job accepted and waiting to run"),
        tags=jobs.job_tags(process_id, owner),
        labels=labels,
        parameters=job_parameters(inputs, requested_outputs, response, subscriber),
    )
    job_id = str(run["id"])
    metrics.job_submitted(process_id, "async")
    job_event(engine, "accepted", job_id, run=run)
    runner.submit(
        JobRequest(
            job_id=job_id,
            process_id=process_id,
            process_conf=engine.processes()[process_id],
            inputs=inputs,
            requested_outputs=requested_outputs,
            response=response,
            subscriber=subscriber,
            logs=limits_from(engine.config),
            jobs_url=jobs_url,
            events=engine.events.settings if engine.events else None,
            owner=owner,
            references=engine.config.references.model_dump(),
        )
    )
    if engine.config.prefect_ui.run_names:
        api = engine.api
        run_page.in_background(engine.backlog, lambda: run_page.name_run(api, process_id, job_id))
    logger.debug("job %s of process %s accepted", job_id, process_id)
    return job_id


def local_hooks(engine: Engine) -> JobHooks:
    """The local pool's hooks, recording each step of a job in Prefect."""
    return JobHooks(
        started=lambda request: _started(engine, request),
        running=lambda request, announce, record: _running(
            engine, request, announce=announce, record=record
        ),
        finished=lambda request, outcome: _finished(engine, request, outcome),
        cancelled_elsewhere=lambda request: _cancelled_elsewhere(engine, request),
        killed=lambda request: _killed(engine, request),
        cancelled_among=lambda requests: _cancelled_among(engine, requests),
        reported=lambda request, message: relay.serve(engine.reports, request.job_id, message),
    )


def _started(engine: Engine, request: JobRequest) -> bool:
    job_id = request.job_id
    if not engine.first_start(job_id):
        logger.info("job %s was started by this process already: not again", job_id)
        return False
    won = engine.persist(claim, engine.api, job_id, engine.holder, name=engine.name)
    if not won.won:
        _lost_claim(engine, request.process_id, job_id, won.holder)
        return False
    return True


def _running(engine: Engine, request: JobRequest, *, announce: bool, record: bool) -> bool:
    # The job runs (claimed here). Recorded Running at once only if its
    # subscriber waits for that, else once it outlived local.async_visible_after:
    # a shorter job goes from Pending to its end, one write fewer.
    job_id = request.job_id
    if record:
        result = engine.persist(engine.api.set_state, job_id, running(job_id))
        refused = result.get("status") in (REJECTED, "ABORT")
        current = (result.get("state") or {}).get("type")
    else:
        # Not recorded yet, but a job dismissed while it was queued must not
        # start: one read (cheaper than a write, and parallel on SQLite).
        run = engine.persist(engine.api.read_flow_run, job_id)
        current = run.get("state_type") if run is not None else "CANCELLED"
        refused = current != "PENDING"
    if refused:
        if current in ("CANCELLING", "CANCELLED"):
            logger.info("job %s was dismissed before it ran", job_id)
            metrics.job_finished(request.process_id, "dismissed")
            finish_cancelled(engine, job_id, request.result_key)
        else:
            logger.info("job %s is %s elsewhere: not run here", job_id, current)
        return False
    if not announce:
        return True
    started = job_event(engine, "running", job_id)
    if started is not None:
        # Before the job's own progress events (sent by its worker process), within a bound.
        started.wait(EVENT_WAIT)
    notify_status(engine, engine.processes(), job_id, "inProgressUri", request.subscriber)
    return True


def _lost_claim(engine: Engine, process_id: str, job_id: str, holder: str | None) -> None:
    # Another process started (or is starting) the job. If that process is
    # gone and the job never left Pending, nobody will run it: fail it.
    run = engine.api.read_flow_run(job_id)
    if run is None or run.get("state_type") != "PENDING":
        logger.info("job %s was started by another process: not run here", job_id)
        return
    live, _ = engine.leases.live_holders()
    if holder in live:
        logger.info("job %s is being started by holder %s: not run here", job_id, holder)
        return
    message = (
        "Interrupted: the pygeoapi process that was starting the job stopped; submit the job again"
    )
    logger.warning("job %s: %s", job_id, message)
    engine.api.set_state(job_id, state("FAILED", message))
    metrics.job_finished(process_id, "failed")
    job_event(engine, "failed", job_id, message=message)


def _finished(engine: Engine, request: JobRequest, outcome: Outcome) -> None:
    job_id = request.job_id
    if outcome.ok:
        if outcome.mimetype != jobs.DEFAULT_MIMETYPE:
            # Progress 100 follows from Completed; only a media type other
            # than the default costs a write of its own.
            labels = {jobs.MIMETYPE_LABEL: outcome.mimetype}
            engine.persist(engine.api.update_labels, job_id, labels)
        final = state("COMPLETED", "Job complete")
    else:
        error = jobs.error_label(outcome.http_status, outcome.ogc_code)
        if error:
            # What GET /jobs/{id}/results answers; only a status of the process's own costs a write.
            engine.persist(engine.api.update_labels, job_id, error)
        final = state("FAILED", outcome.message)
    if engine.persist(engine.api.set_state, job_id, final).get("status") == REJECTED:
        # Cancelled in Prefect after the last check: the output goes.
        metrics.job_finished(request.process_id, "dismissed")
        finish_cancelled(engine, job_id, request.result_key)
        return
    if outcome.ok:
        metrics.job_finished(request.process_id, "successful")
        job_event(engine, "successful", job_id)
        notify_results(engine, request.result_key, request.subscriber)
    else:
        metrics.job_finished(request.process_id, "failed")
        job_event(engine, "failed", job_id, message=outcome.message)
        notify_status(engine, engine.processes(), job_id, "failedUri", request.subscriber)
    summarise(engine, request, outcome)


def summarise(engine: Engine, request: JobRequest, outcome: Outcome) -> None:
    """Write the job's summary artifact in the background (``prefect_ui.summary_artifact``)."""
    if not engine.config.prefect_ui.summary_artifact:
        return
    markdown = run_page.job_summary(
        job_id=request.job_id,
        process_id=request.process_id,
        status="successful" if outcome.ok else "failed",
        message="Job complete" if outcome.ok else outcome.message,
        progress=100 if outcome.ok else None,
        inputs=request.inputs,
        jobs_url=request.jobs_url,
    )
    # Only what the write needs: the closure waits in the backlog.
    api, job_id = engine.api, request.job_id
    run_page.in_background(engine.backlog, lambda: run_page.write_summary(api, job_id, markdown))


def _killed(engine: Engine, request: JobRequest) -> None:
    metrics.job_finished(request.process_id, "dismissed")
    finish_cancelled(engine, request.job_id, request.result_key)


def _cancelled_elsewhere(engine: Engine, request: JobRequest) -> bool:
    run = engine.api.read_flow_run(request.job_id)
    return run is None or run.get("state_type") in ("CANCELLING", "CANCELLED")


def _cancelled_among(engine: Engine, requests: list[JobRequest]) -> set[str]:
    # One read for every running job of the pool: those cancelled, or gone.
    ids = [request.job_id for request in requests]
    found: dict[str, str | None] = {}
    for start in range(0, len(ids), 200):  # Prefect's largest page
        chunk = ids[start : start + 200]
        runs = engine.api.filter_flow_runs(
            {"id": {"any_": chunk}}, sort="ID_DESC", limit=len(chunk), offset=0
        )
        found.update({str(run["id"]): run.get("state_type") for run in runs})
    return {
        job_id
        for job_id in ids
        if job_id not in found or found[job_id] in ("CANCELLING", "CANCELLED")
    }


def finish_cancelled(engine: Engine, job_id: str, result_key: str | None = None) -> None:
    """Drop a stopped job's output, and end a cancellation asked for elsewhere.

    ``result_key``: the job's key in the result store (:meth:`ResultStore.key`).
    """
    engine.store.delete(result_key or job_id)
    run = engine.api.read_flow_run(job_id)
    if run is not None and run.get("state_type") == "CANCELLING":
        engine.api.set_state(
            job_id, state("CANCELLED", "Cancelled: the job's process was stopped"), force=True
        )
