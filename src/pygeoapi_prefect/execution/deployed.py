"""The flows that Prefect workers run for deployed pygeoapi processes.

A deployment made by ``pygeoapi-prefect deploy-process-as-flow`` runs one of
these, from a small generated module that names the process and the result
store. Each runs the process inside a real flow run (so tasks, logs and
retries are Prefect's) and writes the output to the result store under the
flow run id, which is the job id, before the run completes.

- :func:`job_flow` wraps a Prefect flow (a ``FlowProcessor`` process): the
  deployment keeps the flow's own parameters, so ``prefect deployment run
  hi-prefect-world/test --param name=johnny`` works, plus two optional ones
  (``pygeoapi_job_id``, accepted for the Prefect-2-era CLI examples,
  ``pygeoapi_response``, ``raw`` or ``document``, ``pygeoapi_subscriber``,
  the OGC callbacks, which the worker sends itself, and ``pygeoapi_outputs``,
  the request's ``outputs``: which are wanted by reference).

Both let the process write outputs straight to the store
(:func:`pygeoapi_prefect.outputs.open`) under the flow run id.
- :func:`process_flow` runs a standard pygeoapi processor; its parameters are
  ``inputs`` (and ``outputs``) as in an OGC execute request.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import threading
import time
import typing
from typing import Any

from prefect import Flow, flow

from pygeoapi_prefect.execution.callbacks import CallbackPolicy
from pygeoapi_prefect.execution.execute import Outcome, load_processor, run_job, store_outcome
from pygeoapi_prefect.jobs.owners import owner_of
from pygeoapi_prefect.jobs.results import ResultStore, results_document
from pygeoapi_prefect.outputs import JobOutputs, writing_to

__all__ = ["job_flow", "process_flow"]

_EXTRA = (
    inspect.Parameter("pygeoapi_job_id", inspect.Parameter.KEYWORD_ONLY, default=None),
    inspect.Parameter("pygeoapi_response", inspect.Parameter.KEYWORD_ONLY, default="raw"),
    inspect.Parameter("pygeoapi_subscriber", inspect.Parameter.KEYWORD_ONLY, default=None),
    inspect.Parameter("pygeoapi_outputs", inspect.Parameter.KEYWORD_ONLY, default=None),
)
#: Seconds a finished run waits for its callbacks to be delivered.
_CALLBACK_WAIT = 60.0


class _Callbacks:
    """The OGC callbacks of one run, sent from the worker, awaited before it ends."""

    def __init__(
        self, policy: CallbackPolicy, subscriber: dict[str, str] | None, process_id: str
    ) -> None:
        self.policy = policy
        self.subscriber = subscriber or None
        self.process_id = process_id
        self.sending: list[threading.Thread] = []

    def status(self, key: str, status: str, message: str) -> None:
        document = {
            "type": "process",
            "jobID": _current_run_id(),
            "processID": self.process_id,
            "status": status,
            "message": message,
        }
        self._send(key, document)

    def results(self, outcome: Outcome) -> None:
        self._send(
            "successUri",
            results_document(outcome.outputs, outcome.mimetype, outcome.output_ids),
        )

    def _send(self, key: str, document: Any) -> None:
        if self.subscriber and self.subscriber.get(key):
            thread = self.policy.send(self.subscriber, key, document)
            if thread is not None:
                self.sending.append(thread)

    def wait(self) -> None:
        # The flow run's process may end right after: let deliveries finish.
        deadline = time.monotonic() + _CALLBACK_WAIT
        for thread in self.sending:
            thread.join(max(0.0, deadline - time.monotonic()))


def _policy(callbacks: dict[str, Any] | None) -> CallbackPolicy:
    settings = callbacks or {}
    return CallbackPolicy(
        settings.get("allow", ()),
        timeout=settings.get("timeout", 10),
        retries=settings.get("retries", 4),
    )


def _result_key() -> str:
    # The job's key in the result store: under the space of the run's owner
    # (its owner tag, set when the job was made; see jobs/owners.py).
    from prefect.runtime import flow_run

    return ResultStore.key(_current_run_id(), owner_of(list(flow_run.tags or [])))


def _current_run_id() -> str:
    from prefect.runtime import flow_run

    return str(flow_run.id)


def _beating() -> contextlib.AbstractContextManager[None]:
    # Our heartbeats, which the zombie automation watches: every 30 s, or as
    # the worker's PYGEOAPI_PREFECT_HEARTBEAT_SECONDS says (0: none).
    from pygeoapi_prefect.execution.heartbeat import beating, env_interval
    from pygeoapi_prefect.prefect.api import prefect_settings_api_url

    interval = env_interval()
    if interval is None:
        return contextlib.nullcontext()
    return beating(prefect_settings_api_url(), _current_run_id(), interval)


def job_flow(
    user_flow: Flow[..., Any],
    *,
    process_id: str | None = None,
    results_url: str = "",
    storage_options: dict[str, Any] | None = None,
    results_block: str | None = None,
    callbacks: dict[str, Any] | None = None,
) -> Flow[..., Any]:
    """The deployable flow for a Prefect-flow process: the flow, storing its output."""
    store = ResultStore(results_url, storage_options, block=results_block)
    policy = _policy(callbacks)
    signature = inspect.signature(user_flow.fn)

    def begin(kwargs: dict[str, Any]) -> tuple[str, _Callbacks, Any]:
        kwargs.pop("pygeoapi_job_id", None)
        response = kwargs.pop("pygeoapi_response", "raw") or "raw"
        requested = kwargs.pop("pygeoapi_outputs", None)
        notify = _Callbacks(policy, kwargs.pop("pygeoapi_subscriber", None), process_id or "")
        notify.status("inProgressUri", "running", "Job running")
        return response, notify, requested

    def finish(
        result: Any, response: str, notify: _Callbacks, requested: Any, written: JobOutputs
    ) -> Any:
        from pygeoapi_prefect.processes import package_result

        mimetype, outputs = package_result(result)
        outcome = Outcome(
            ok=True,
            mimetype=mimetype,
            outputs=outputs,
            output_ids=("result",),
            streamed=written.parts(),
        )
        store_outcome(store, _result_key(), outcome, response, requested)
        notify.results(outcome)
        return result

    if inspect.iscoroutinefunction(user_flow.fn):

        @functools.wraps(user_flow.fn)
        async def run(*args: Any, **kwargs: Any) -> Any:
            response, notify, requested = begin(kwargs)
            try:
                with _beating(), writing_to(store, _result_key) as written:
                    result = await user_flow.fn(*args, **kwargs)
                return finish(result, response, notify, requested, written)
            except Exception as exc:
                notify.status("failedUri", "failed", f"{exc.__class__.__name__}: {exc}")
                raise
            finally:
                notify.wait()

    else:

        @functools.wraps(user_flow.fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            response, notify, requested = begin(kwargs)
            try:
                with _beating(), writing_to(store, _result_key) as written:
                    result = user_flow.fn(*args, **kwargs)
                return finish(result, response, notify, requested, written)
            except Exception as exc:
                notify.status("failedUri", "failed", f"{exc.__class__.__name__}: {exc}")
                raise
            finally:
                notify.wait()

    # Resolve string annotations (`from __future__ import annotations` in the
    # flow's module) there, not in this module, where its types do not exist.
    hints = typing.get_type_hints(user_flow.fn)
    parameters = [
        p.replace(annotation=hints.get(p.name, p.annotation)) for p in signature.parameters.values()
    ]
    signature = signature.replace(
        return_annotation=hints.get("return", signature.return_annotation)
    )
    keyword_only_at = next(
        (i for i, p in enumerate(parameters) if p.kind is inspect.Parameter.VAR_KEYWORD),
        len(parameters),
    )
    parameters[keyword_only_at:keyword_only_at] = _EXTRA
    run.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    return flow(
        name=user_flow.name,
        version=user_flow.version,
        description=user_flow.description,
        retries=user_flow.retries,
        retry_delay_seconds=user_flow.retry_delay_seconds,
        timeout_seconds=user_flow.timeout_seconds,
        log_prints=user_flow.log_prints,
        # The output goes to the result store as JSON, text or bytes; Prefect's
        # own result persistence would pickle it where a reader might load it.
        persist_result=False,
    )(run)


def process_flow(
    process_id: str,
    process_conf: dict[str, Any],
    *,
    results_url: str = "",
    storage_options: dict[str, Any] | None = None,
    results_block: str | None = None,
    callbacks: dict[str, Any] | None = None,
) -> Flow[..., Any]:
    """The deployable flow for a standard pygeoapi process."""
    store = ResultStore(results_url, storage_options, block=results_block)
    policy = _policy(callbacks)

    def run(
        inputs: dict[str, Any],
        outputs: dict[str, Any] | None = None,
        pygeoapi_job_id: str | None = None,
        pygeoapi_response: str = "raw",
        pygeoapi_subscriber: dict[str, str] | None = None,
    ) -> Any:
        """Run the pygeoapi process with OGC execute-request inputs."""
        job_id = _current_run_id()
        notify = _Callbacks(policy, pygeoapi_subscriber, process_id)
        notify.status("inProgressUri", "running", "Job running")
        try:
            processor = load_processor(process_conf)
            processor.set_job_id(job_id)
            with _beating():
                outcome = run_job(
                    processor,
                    inputs,
                    outputs,
                    job_label=f"job {job_id} of process {process_id}",
                    store=store,
                    job_id=_result_key,
                )
            if not outcome.ok:
                raise RuntimeError(outcome.message)
            store_outcome(store, _result_key(), outcome, pygeoapi_response or "raw", outputs)
            notify.results(outcome)
            return outcome.outputs
        except Exception as exc:
            notify.status("failedUri", "failed", str(exc) or exc.__class__.__name__)
            raise
        finally:
            notify.wait()

    run.__name__ = process_id.replace("-", "_")
    return flow(
        name=process_id,
        description=f"The pygeoapi process {process_id!r}",
        persist_result=False,  # as in job_flow: nothing pickled
    )(run)
