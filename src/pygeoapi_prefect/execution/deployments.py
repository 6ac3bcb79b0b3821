"""Jobs of processes that run on a Prefect deployment, executed by Prefect workers.

A worker runs the job (:mod:`pygeoapi_prefect.execution.deployed`) and
writes its output to the result store; here the run is only created from
the deployment, and awaited for a sync request.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from pygeoapi.process.base import BaseProcessor
from pygeoapi.util import JobStatus

import pygeoapi_prefect.metrics as metrics
from pygeoapi_prefect.errors import (
    DeploymentMissing,
    InvalidInputs,
    JobStillRunning,
    PrefectRequestFailed,
    ProcessFailed,
)
from pygeoapi_prefect.execution.notify import job_event
from pygeoapi_prefect.execution.sync import answer_from_store
from pygeoapi_prefect.jobs import runs as jobs
from pygeoapi_prefect.jobs.answers import is_multipart, is_narrowed
from pygeoapi_prefect.jobs.exchange import current_exchange
from pygeoapi_prefect.jobs.listing import get_job, get_job_result, stored_manifest
from pygeoapi_prefect.processes import DeploymentProcessor, FlowProcessor

if TYPE_CHECKING:
    from pygeoapi_prefect.execution.engine import Engine

__all__ = ["run_on_deployment"]


def _deployment_id(engine: Engine, process_id: str, deployment: str) -> str:
    deployment_id = engine.deployment_ids.get(deployment)
    if deployment_id is None:
        deployment_id = engine.api.deployment_id(deployment)
        if deployment_id is None:
            raise DeploymentMissing(
                f"Process {process_id!r} runs on the Prefect deployment {deployment!r}, "
                "which does not exist: run `pygeoapi-prefect deploy-process-as-flow "
                f"{process_id}`"
            )
        engine.deployment_ids[deployment] = deployment_id
    return deployment_id


def _parameters(
    process_id: str,
    processor: BaseProcessor,
    inputs: dict[str, Any],
    requested_outputs: dict[str, Any] | None,
    response: str,
    subscriber: dict[str, str] | None,
) -> dict[str, Any]:
    ours: dict[str, Any] = {"pygeoapi_response": response}
    if subscriber:
        # Our deployed flows send the callbacks themselves, from the worker.
        ours["pygeoapi_subscriber"] = subscriber
    if isinstance(processor, DeploymentProcessor) and not processor.stores_results:
        if subscriber:
            raise InvalidInputs(
                f"Process {process_id!r} runs a flow that pygeoapi-prefect did not deploy: "
                "it cannot send callbacks (leave out 'subscriber')"
            )
        return dict(inputs)  # only the flow's own parameters
    if isinstance(processor, FlowProcessor | DeploymentProcessor):
        if requested_outputs:
            ours["pygeoapi_outputs"] = requested_outputs
        return {**inputs, **ours}
    return {"inputs": inputs, "outputs": requested_outputs, **ours}


def run_on_deployment(
    engine: Engine,
    process_id: str,
    processor: BaseProcessor,
    deployment: str,
    inputs: dict[str, Any],
    requested_outputs: dict[str, Any] | None,
    response: str,
    subscriber: dict[str, str] | None,
    *,
    wait: bool,
    jobs_url: str | None,
    owner: str | None = None,
) -> tuple[str, str, Any, JobStatus]:
    """Create the job's run of the deployment; for a sync request, wait for it.

    Returns:
        job id, media type, outputs, status (as ``execute_process`` does).

    """
    deployment_id = _deployment_id(engine, process_id, deployment)
    parameters = _parameters(process_id, processor, inputs, requested_outputs, response, subscriber)
    labels = jobs.new_job_labels({jobs.RESPONSE_LABEL: response}, jobs_url)
    try:
        run = engine.api.create_deployment_run(
            deployment_id,
            parameters=parameters,
            tags=jobs.job_tags(process_id, owner),
            labels=labels,
        )
    except PrefectRequestFailed as exc:
        # Deleted and made again in Prefect since it was cached?
        engine.deployment_ids.pop(deployment, None)
        if exc.status != 404:
            raise
        raise DeploymentMissing(
            f"The Prefect deployment {deployment!r} of process {process_id!r} is gone; "
            f"run `pygeoapi-prefect deploy-process-as-flow {process_id}`"
        ) from exc
    job_id = str(run["id"])
    metrics.job_submitted(process_id, "sync" if wait else "async")
    job_event(engine, "accepted", job_id, run=run)
    if not wait:
        return job_id, "application/json", None, JobStatus.accepted
    config = engine.config.deployments
    deadline = time.monotonic() + config.sync_timeout
    processes = engine.processes()
    while True:
        job = get_job(engine.api, processes, job_id)
        if job["status"] not in (JobStatus.accepted.value, JobStatus.running.value):
            break
        if time.monotonic() > deadline:
            raise JobStillRunning(
                f"Job {job_id} is still {job['status']} after {config.sync_timeout:g} s; "
                f"it goes on: follow it at /jobs/{job_id}"
            )
        time.sleep(config.poll_seconds)
    if engine.config.watch.enabled is False:
        # Else the watcher counts every end of a deployment's run, sync or async,
        # once (execution/watcher.py), also one that outlives this wait.
        metrics.job_finished(process_id, job["status"])
    if job["status"] != JobStatus.successful.value:
        current_exchange().failed_job_id = job_id
        raise ProcessFailed(job["message"], job_id=job_id)
    manifest, key = stored_manifest(engine, processes, job_id)
    if manifest.references or not manifest.whole or is_multipart(manifest) or is_narrowed(manifest):
        # Links, outputs only the store holds, several raw outputs, or some
        # of several: as a local sync job answers.
        mimetype, outputs, _ = answer_from_store(engine, job_id, key, jobs_url)
    else:
        mimetype, outputs = get_job_result(engine, processes, job_id)
    return job_id, mimetype, outputs, JobStatus.successful
