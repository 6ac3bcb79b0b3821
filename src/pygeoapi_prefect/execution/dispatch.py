"""Executing a process: the OGC execution mode, validation, and where the job runs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pygeoapi.process.base import BaseProcessor
from pygeoapi.util import (
    JobStatus,
    ProcessExecutionMode,
    RequestedProcessExecutionMode,
    RequestedResponse,
    Subscriber,
)

from pygeoapi_prefect.errors import ProcessFailed
from pygeoapi_prefect.execution import async_jobs
from pygeoapi_prefect.execution.deployments import run_on_deployment
from pygeoapi_prefect.execution.references import (
    ReferencePolicy,
    check_references,
    is_reference,
    passed_as_links,
    resolve_references,
)
from pygeoapi_prefect.execution.sync import run_sync
from pygeoapi_prefect.execution.validation import check_execute_request
from pygeoapi_prefect.jobs.answers import transmission
from pygeoapi_prefect.jobs.exchange import current_exchange

if TYPE_CHECKING:
    from pygeoapi_prefect.execution.engine import Engine

__all__ = ["execute"]


def execute(
    engine: Engine,
    processes: Mapping[str, Any],
    process_id: str,
    processor: BaseProcessor,
    data_dict: dict[str, Any],
    *,
    execution_mode: RequestedProcessExecutionMode | None,
    requested_outputs: dict[str, Any] | None,
    subscriber: Subscriber | dict[str, str] | None,
    requested_response: str | None,
    jobs_url: str | None,
) -> tuple[str, str, Any, JobStatus, dict[str, str] | None]:
    """Run a job; answers as ``PrefectManager.execute_process``.

    Raises:
        InvalidInputs: the request does not match the process (no job is made).
        ProcessFailed: a sync job failed (``job_id`` names the recorded job).

    """
    if engine.config.validate_inputs:
        check_execute_request(process_id, processor.metadata, data_dict, requested_outputs)
    transmission(requested_outputs)  # InvalidInputs: an unknown transmissionMode
    callbacks = _subscriber(subscriber)
    engine.callbacks.check(callbacks)
    response = requested_response or RequestedResponse.raw.value
    caller = current_exchange().caller
    owner = caller.owner_tag if caller is not None else None
    run_async, headers = _choose_mode(processor, execution_mode)
    deployment = (processes[process_id].get("processor") or {}).get("deployment")
    # Input links: checked here; read here for a sync job run here, else where it runs.
    resolved = _references(
        engine, processes[process_id], processor, data_dict, read=not (run_async or deployment)
    )
    if deployment:
        job_id, mimetype, outputs, status = run_on_deployment(
            engine,
            process_id,
            processor,
            deployment,
            data_dict,
            requested_outputs,
            response,
            callbacks,
            wait=not run_async,
            jobs_url=jobs_url,
            owner=owner,
        )
        return job_id, mimetype, outputs, status, headers
    if run_async:
        job_id = async_jobs.submit(
            engine,
            process_id,
            data_dict,
            requested_outputs,
            response,
            callbacks,
            jobs_url=jobs_url,
            owner=owner,
        )
        return job_id, "application/json", None, JobStatus.accepted, headers
    result = run_sync(
        engine,
        process_id,
        processor,
        data_dict,
        requested_outputs,
        response,
        callbacks,
        jobs_url=jobs_url,
        owner=owner,
        resolved=resolved,
    )
    if not result.outcome.ok:
        current_exchange().failed_job_id = result.job_id or None
        raise ProcessFailed(
            result.outcome.message,
            job_id=result.job_id or None,
            http_status=result.outcome.http_status,
            ogc_code=result.outcome.ogc_code,
        )
    if not result.job_id:
        current_exchange().unrecorded = True
    return result.job_id, result.mimetype, result.outputs, JobStatus.successful, headers


def _references(
    engine: Engine,
    process_conf: Mapping[str, Any],
    processor: BaseProcessor,
    inputs: dict[str, Any],
    *,
    read: bool,
) -> dict[str, Any] | None:
    # InvalidInputs (400, no job) naming each input whose link may not be read.
    skip = passed_as_links(process_conf, processor)
    if not any(
        is_reference(occurrence)
        for name, value in inputs.items()
        if name not in skip
        for occurrence in (value if isinstance(value, list) else [value])
    ):
        return None
    store = engine.store
    store.fs  # noqa: B018 - a block-defined store's settings, for s3:// references
    policy = ReferencePolicy.from_settings(
        engine.config.references.model_dump(), store.url, store.storage_options
    )
    if not read:
        check_references(inputs, processor.metadata, policy, skip)
        return None
    return resolve_references(inputs, processor.metadata, policy, skip)


def _choose_mode(
    processor: BaseProcessor, execution_mode: RequestedProcessExecutionMode | None
) -> tuple[bool, dict[str, str] | None]:
    # The rules of OGC API - Processes 1.0, /req/core/process-execute-*:
    # honour "respond-async" when the process allows it; otherwise run
    # sync when the process allows that, else async.
    options = processor.metadata.get("jobControlOptions", [])
    can_async = ProcessExecutionMode.async_execute.value in options
    can_sync = ProcessExecutionMode.sync_execute.value in options
    if execution_mode == RequestedProcessExecutionMode.respond_async and can_async:
        run_async = True
    else:
        run_async = not can_sync
    if run_async:
        applied = RequestedProcessExecutionMode.respond_async.value
    elif execution_mode == RequestedProcessExecutionMode.wait:
        return False, None
    else:
        applied = RequestedProcessExecutionMode.wait.value
    return run_async, {"Preference-Applied": applied}


_OGC_KEYS = ("successUri", "inProgressUri", "failedUri")


def _subscriber(subscriber: Subscriber | dict[str, str] | None) -> dict[str, str] | None:
    # pygeoapi's Subscriber (or the OGC keys already), as the OGC keys.
    if subscriber is None:
        return None
    if isinstance(subscriber, dict):
        return {key: subscriber[key] for key in _OGC_KEYS if subscriber.get(key)} or None
    found = {
        "successUri": subscriber.success_uri,
        "inProgressUri": subscriber.in_progress_uri,
        "failedUri": subscriber.failed_uri,
    }
    return {key: value for key, value in found.items() if value}
