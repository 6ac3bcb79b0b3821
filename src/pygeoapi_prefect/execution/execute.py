"""Running one pygeoapi processor for one job, wherever that happens.

Used in the request thread for sync jobs and inside the local worker
processes for async jobs, so both behave the same.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pygeoapi_prefect.errors import InvalidInputs
from pygeoapi_prefect.execution.joblogs import LogLimits
from pygeoapi_prefect.execution.references import (
    ReferencePolicy,
    passed_as_links,
    resolve_references,
)
from pygeoapi_prefect.jobs.answers import transmission
from pygeoapi_prefect.jobs.results import declared_media_types
from pygeoapi_prefect.outputs import writing_to

if TYPE_CHECKING:
    from pygeoapi.process.base import BaseProcessor

    from pygeoapi_prefect.jobs.results import Manifest, Part, ResultStore

logger = logging.getLogger(__name__)

__all__ = [
    "JobRequest",
    "Outcome",
    "load_processor",
    "resolve_inputs",
    "run_job",
    "run_processor",
    "store_outcome",
]


@dataclass(frozen=True)
class JobRequest:
    """Everything needed to run a job; plain data, so it crosses processes."""

    job_id: str
    process_id: str
    process_conf: dict[str, Any]
    inputs: dict[str, Any]
    requested_outputs: dict[str, Any] | None = None
    response: str = "raw"
    subscriber: dict[str, str] | None = None
    #: The job's log settings (``server.manager.logs``).
    logs: LogLimits = field(default_factory=LogLimits)
    #: ``<pygeoapi URL>/jobs``, for the links of the job's summary in the Prefect UI.
    jobs_url: str | None = None
    #: pygeoapi's ``pubsub`` block, for the job's progress events (None: none).
    events: dict[str, Any] | None = None
    #: The owner tag of the job's run (``server.manager.auth``), if any.
    owner: str | None = None
    #: ``server.manager.references``: input links are read where the job runs.
    references: dict[str, Any] | None = None

    @property
    def result_key(self) -> str:
        """Where the job's results go in the result store (under its owner's space)."""
        from pygeoapi_prefect.jobs.results import ResultStore

        return ResultStore.key(self.job_id, self.owner)


@dataclass
class Outcome:
    """What became of a job run."""

    ok: bool
    mimetype: str = "application/json"
    outputs: Any = None
    message: str = ""
    output_ids: tuple[str, ...] = field(default_factory=tuple)
    #: The HTTP status and OGC code a failed sync job answers with: those of
    #: the pygeoapi error the process raised, else 500 NoApplicableCode.
    http_status: int = 500
    ogc_code: str = "NoApplicableCode"
    #: Outputs the process wrote to the store itself (pygeoapi_prefect.outputs).
    streamed: tuple[Part, ...] = ()
    #: The media type each output's description implies.
    media_types: dict[str, str] = field(default_factory=dict)


def load_processor(process_conf: dict[str, Any]) -> BaseProcessor:
    """Instantiate the processor named in a pygeoapi process resource."""
    from pygeoapi.plugin import load_plugin

    processor = load_plugin("process", process_conf["processor"])
    processor.allow_internal_requests = process_conf.get("allow_internal_requests", False)
    return processor


def failure_message(exc: BaseException) -> str:
    """The text a client sees for a process that raised."""
    text = str(exc).strip()
    return text or f"the process raised {exc.__class__.__name__}"


def run_processor(
    processor: BaseProcessor,
    inputs: dict[str, Any],
    requested_outputs: dict[str, Any] | None,
    *,
    job_label: str,
) -> Outcome:
    """Execute the processor; a process that raises gives a failed outcome."""
    declared = processor.metadata.get("outputs") or {}
    output_ids = tuple(declared.keys())
    extra: dict[str, Any] = {}
    if processor.supports_outputs:
        extra["outputs"] = requested_outputs
    try:
        mimetype, outputs = processor.execute(inputs, **extra)
    except Exception as exc:  # noqa: BLE001 - any failure of user code fails the job
        logger.warning("%s failed: %s", job_label, exc, exc_info=True)
        return Outcome(
            ok=False,
            message=failure_message(exc),
            output_ids=output_ids,
            http_status=int(getattr(exc, "http_status_code", 500)),
            ogc_code=str(getattr(exc, "ogc_exception_code", "NoApplicableCode")),
        )
    return Outcome(
        ok=True,
        mimetype=mimetype or "application/octet-stream",
        outputs=outputs,
        output_ids=output_ids,
        media_types=declared_media_types(declared),
    )


def run_job(
    processor: BaseProcessor,
    inputs: dict[str, Any],
    requested_outputs: dict[str, Any] | None,
    *,
    job_label: str,
    store: ResultStore,
    job_id: Callable[[], str],
    references: Mapping[str, Any] | None = None,
    process_conf: Mapping[str, Any] | None = None,
) -> Outcome:
    """:func:`run_processor`, with :func:`pygeoapi_prefect.outputs.open` writing to the job.

    With ``references`` (``server.manager.references``) the input links are
    read first; one that cannot be fails the job, naming its input.
    """
    if references is not None:
        try:
            inputs = resolve_inputs(processor, inputs, references, store, process_conf)
        except InvalidInputs as exc:
            logger.warning("%s: %s", job_label, exc.message)
            return Outcome(
                ok=False, message=exc.message, http_status=400, ogc_code=exc.ogc_exception_code
            )
    with writing_to(store, job_id) as written:
        outcome = run_processor(processor, inputs, requested_outputs, job_label=job_label)
    outcome.streamed = written.parts()
    return outcome


def resolve_inputs(
    processor: BaseProcessor,
    inputs: dict[str, Any],
    references: Mapping[str, Any],
    store: ResultStore,
    process_conf: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The inputs with their links read (:mod:`~pygeoapi_prefect.execution.references`).

    Raises:
        InvalidInputs: naming each input whose link may not, or cannot, be read.
    """
    policy = ReferencePolicy.from_settings(references, store.url, store.storage_options)
    skip = passed_as_links(process_conf or {}, processor)
    return resolve_references(inputs, processor.metadata, policy, skip)


def store_outcome(
    store: ResultStore,
    job_id: str,
    outcome: Outcome,
    response: str,
    requested_outputs: dict[str, Any] | None = None,
) -> Manifest:
    """Write a successful outcome's outputs to the result store; returns the manifest."""
    requested, references = transmission(requested_outputs)
    outputs = outcome.outputs
    if outcome.streamed and _nothing(outputs):
        outputs = None  # the process wrote its outputs itself and returned nothing else
    return store.write(
        job_id,
        outcome.mimetype,
        outputs,
        response=response,
        output_ids=outcome.output_ids,
        references=references,
        requested=requested,
        streamed=outcome.streamed,
        media_types=outcome.media_types,
    )


def _nothing(outputs: Any) -> bool:
    # None, or a flow's None as FlowProcessor packages it ({"id": ..., "value": None}).
    if isinstance(outputs, dict) and set(outputs) == {"id", "value"}:
        return outputs["value"] is None
    return outputs is None
