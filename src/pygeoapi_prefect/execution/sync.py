"""Sync jobs: run in the request, recorded in Prefect as late as the job allows.

A job that ends within ``local.sync_visible_after`` seconds is recorded in
one API call, directly in its final state. A slower one is recorded as
Running once that time has passed (so the Prefect UI shows it while it
runs, and it sends heartbeats like an async job: a server killed under it
leaves it to the zombie automation, not ``running`` forever), and moved to
its final state at the end.

Bounded in an outage: after the processor returns, the request waits on
Prefect at most ``api_timeout`` in all. A record that cannot be written by
then is handed to the engine's background recorder, which retries it for up
to 10 minutes (:mod:`pygeoapi_prefect.execution.persist`); the client gets
its result at once (a job recorded Running keeps its ``Location``; one not
recorded yet has none, and appears in the job list when Prefect is back).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from pygeoapi.process.base import BaseProcessor
from pygeoapi.util import RequestedResponse

import pygeoapi_prefect.metrics as metrics
from pygeoapi_prefect.errors import (
    JobNotFound,
    PrefectAuthFailed,
    PrefectManagerError,
    PrefectUnavailable,
)
from pygeoapi_prefect.execution.async_jobs import finish_cancelled, job_parameters
from pygeoapi_prefect.execution.execute import Outcome, run_job, store_outcome
from pygeoapi_prefect.execution.heartbeat import beating
from pygeoapi_prefect.execution.joblogs import (
    JobLog,
    capturing,
    limits_from,
    shipping_meanwhile,
)
from pygeoapi_prefect.execution.notify import job_event, notify_status
from pygeoapi_prefect.execution.timers import TimerHandle
from pygeoapi_prefect.jobs import runs as jobs
from pygeoapi_prefect.jobs.answers import (
    Answer,
    Links,
    document,
    one_of_several,
    results_answer,
    several_outputs,
    transmission,
    values_answer,
    values_map,
)
from pygeoapi_prefect.jobs.exchange import current_exchange
from pygeoapi_prefect.jobs.results import ResultStore, results_document
from pygeoapi_prefect.prefect.api import REJECTED
from pygeoapi_prefect.prefect.states import state
from pygeoapi_prefect.progress import reporting_to

if TYPE_CHECKING:
    from pygeoapi_prefect.execution.engine import Engine

logger = logging.getLogger(__name__)

__all__ = ["SyncResult", "answer_from_store", "deliver", "run_sync"]

#: The job event of a state a sync job is recorded in.
_KIND = {"RUNNING": "running", "COMPLETED": "successful", "FAILED": "failed"}


class SyncResult:
    """What a sync execution answers: its job (``""`` if not recorded yet) and output."""

    def __init__(self, job_id: str, outcome: Outcome, mimetype: str, outputs: Any) -> None:
        self.job_id = job_id
        self.outcome = outcome
        self.mimetype = mimetype
        self.outputs = outputs


class _Record:
    """The flow run of one sync job, created as late as the job allows."""

    def __init__(
        self,
        engine: Engine,
        process_id: str,
        parameters: dict[str, Any],
        response: str,
        subscriber: dict[str, str] | None,
        jobs_url: str | None,
        owner: str | None = None,
        requested_outputs: dict[str, Any] | None = None,
    ) -> None:
        self.engine = engine
        self.owner = owner
        self.process_id = process_id
        self.parameters = parameters
        self.response = response
        self.requested_outputs = requested_outputs
        self.subscriber = subscriber
        self.jobs_url = jobs_url
        self._lock = threading.Lock()
        self._begun = False
        self._finishing = False
        self._created = threading.Event()
        self._timer: TimerHandle | None = None
        self._beat = contextlib.ExitStack()
        self._beat_closed = False
        self.job_id: str | None = None
        #: The job's captured log lines, sent once the job has its id.
        self.logs = JobLog(limits_from(engine.config))
        #: The outcome, for the summary in the Prefect UI.
        self.outcome: Outcome | None = None
        #: The run as created (for its event).
        self.run: dict[str, Any] | None = None

    def _labels(self, labels: dict[str, Any]) -> dict[str, Any]:
        return jobs.new_job_labels({jobs.RESPONSE_LABEL: self.response, **labels}, self.jobs_url)

    def _create(self, final: dict[str, Any], labels: dict[str, Any], budget: float | None) -> str:
        run = self.engine.api.create_flow_run(
            flow_name=self.process_id,
            state=final,
            tags=jobs.job_tags(self.process_id, self.owner),
            labels=self._labels(labels),
            parameters=self.parameters,
            budget=budget,
        )
        self.run = run
        return str(run["id"])

    def begin(self) -> str:
        """Create the flow run as Running now, and start its heartbeats; returns the job id.

        Once only: a second call (the timer's and the process's, which asked
        for its id to write an output) waits for the first's run.
        """
        with self._lock:
            if self._finishing:
                return ""
            begun, self._begun = self._begun, True
        if begun:
            self._created.wait()
            return self.job_id or ""
        try:
            self.job_id = self._create(
                state("RUNNING", "Job running"), {jobs.PROGRESS_LABEL: 0}, None
            )
        finally:
            self._created.set()
        job_event(self.engine, "running", self.job_id, run=self.run)
        if self.engine.config.prefect_ui.run_names:
            from pygeoapi_prefect.execution.run_page import in_background, name_run

            api, process_id, job_id = self.engine.api, self.process_id, self.job_id
            in_background(self.engine.backlog, lambda: name_run(api, process_id, job_id))
        config = self.engine.config
        with self._lock:
            # At once: a sync job is recorded only once it has run a while, and
            # the zombie automation watches a run from its first beat on. Not
            # if the job has ended meanwhile (finish() closed the beats).
            if not self._beat_closed:
                self._beat.enter_context(
                    beating(
                        self.engine.api.api_url, self.job_id, config.heartbeat.interval, first=0.0
                    )
                )
                # Its log lines so far, and from now on while it runs (the rest at its end).
                self.logs.job_id = self.job_id
                self._beat.enter_context(shipping_meanwhile(self.engine.api, self.logs))
        notify_status(
            self.engine, self.engine.processes(), self.job_id, "inProgressUri", self.subscriber
        )
        return self.job_id

    def begin_after(self, seconds: float) -> None:
        """Call :meth:`begin` in the background if the job is still running then."""
        self._timer = self.engine.timers.call_later(seconds, self._begin_quietly)

    def _begin_quietly(self) -> None:
        try:
            self.begin()
        except PrefectManagerError as exc:
            logger.warning("a running sync job of %s is not recorded yet: %s", self.process_id, exc)

    def report(self, percent: int, message: str | None) -> None:
        """Store progress once the job is recorded (a fast job's is not)."""
        if not (self._created.is_set() and self.job_id):
            return
        labels: dict[str, Any] = {jobs.PROGRESS_LABEL: percent}
        if message is not None:
            labels[jobs.MESSAGE_LABEL] = message
        try:
            self.engine.api.update_labels(self.job_id, labels)
        except PrefectManagerError as exc:  # progress never fails a job
            logger.warning("progress of sync job %s not stored: %s", self.job_id, exc)
            return
        job_event(self.engine, "progress", self.job_id, progress=percent, message=message)

    def finish(self, outcome: Outcome) -> str:
        """Record the end; returns the job id, ``""`` when the record was deferred."""
        if self._timer is not None:
            self._timer.cancel()
        with self._lock:
            self._finishing = True
            begun = self._begun
        end = time.monotonic() + self.engine.config.api_timeout
        # The timer may be creating the run right now: wait for it only within
        # this request's bound.
        created = not begun or self._created.wait(max(0.0, end - time.monotonic()))
        with self._lock:
            self._beat_closed = True
            self._beat.close()
        if outcome.ok:
            final = state("COMPLETED", "Job complete")
            labels: dict[str, Any] = {
                jobs.PROGRESS_LABEL: 100,
                jobs.MIMETYPE_LABEL: outcome.mimetype,
            }
        else:
            final = state("FAILED", outcome.message)
            labels = dict(jobs.error_label(outcome.http_status, outcome.ogc_code))
        self.outcome = outcome
        if not created:
            # Still under way: the record is finished in the background once the
            # create settles (never a second run beside it).
            logger.warning(
                "sync job of %s: record deferred (its run is being created)", self.process_id
            )
            self.engine.record_later(self._finish_later, outcome, final, labels)
            return ""
        job_id = self.job_id
        try:
            if job_id:
                self._finish_recorded(job_id, outcome, final, end)
                self.recorded(job_id, named=True)
                return job_id
            job_id = self._create(final, labels, max(0.0, end - time.monotonic()))
        except PrefectAuthFailed:
            # Not an outage: Prefect is up and refuses these credentials, so a
            # deferred record would never land. The client is told (503).
            raise
        except PrefectUnavailable as exc:
            logger.warning("sync job of %s: record deferred (%s)", self.process_id, exc)
            self.engine.record_later(self._record_later, job_id, outcome, final, labels)
            return job_id or ""
        if outcome.ok:
            self._store(job_id, outcome)
        job_event(self.engine, _KIND[final["type"]], job_id, run=self.run)
        self.recorded(job_id, named=False)
        return job_id

    def recorded(self, job_id: str, *, named: bool) -> None:
        """The job's run exists: its name, summary and log lines, in the background."""
        from pygeoapi_prefect.execution.async_jobs import summarise
        from pygeoapi_prefect.execution.execute import JobRequest
        from pygeoapi_prefect.execution.joblogs import ship_in_background
        from pygeoapi_prefect.execution.run_page import in_background, name_run

        engine = self.engine
        # The closures wait in the backlog: they hold what they write, never the record.
        api, process_id = engine.api, self.process_id
        if not named and engine.config.prefect_ui.run_names:
            in_background(engine.backlog, lambda: name_run(api, process_id, job_id))
        ship_in_background(engine.backlog, engine.background().submit, api, self.logs, job_id)
        if self.outcome is not None:
            request = JobRequest(
                job_id,
                self.process_id,
                {},
                self.parameters.get("inputs") or {},
                jobs_url=self.jobs_url,
            )
            summarise(engine, request, self.outcome)

    def _finish_recorded(
        self, job_id: str, outcome: Outcome, final: dict[str, Any], end: float
    ) -> None:
        api = self.engine.api
        if outcome.ok:
            self._store(job_id, outcome)
            if outcome.mimetype != jobs.DEFAULT_MIMETYPE:
                api.update_labels(
                    job_id,
                    {jobs.MIMETYPE_LABEL: outcome.mimetype},
                    budget=max(0.0, end - time.monotonic()),
                )
        else:
            error = jobs.error_label(outcome.http_status, outcome.ogc_code)
            if error:
                api.update_labels(job_id, error, budget=max(0.0, end - time.monotonic()))
        result = api.set_state(job_id, final, budget=max(0.0, end - time.monotonic()))
        if result.get("status") == REJECTED:
            finish_cancelled(self.engine, job_id, ResultStore.key(job_id, self.owner))
            raise JobNotFound(f"Job {job_id} was dismissed while it ran")
        job_event(self.engine, _KIND[final["type"]], job_id, message=final.get("message"))

    def _store(self, job_id: str, outcome: Outcome) -> None:
        try:
            store_outcome(
                self.engine.store,
                ResultStore.key(job_id, self.owner),
                outcome,
                self.response,
                self.requested_outputs,
            )
        except PrefectManagerError:
            self.engine.persist(
                self.engine.api.set_state,
                job_id,
                state("FAILED", "The job's output could not be stored"),
                force=True,
            )
            raise

    def _finish_later(
        self, outcome: Outcome, final: dict[str, Any], labels: dict[str, Any]
    ) -> None:
        # In the background recorder: the timer's create settles within its own bound.
        self._created.wait()
        if self.job_id and outcome.ok:
            try:
                self._store(self.job_id, outcome)
            except PrefectManagerError as exc:
                logger.error("sync job %s: output not stored: %s", self.job_id, exc)
                return
        self._record_later(self.job_id, outcome, final, labels)

    def _record_later(
        self,
        job_id: str | None,
        outcome: Outcome,
        final: dict[str, Any],
        labels: dict[str, Any],
    ) -> None:
        # In the background recorder: the client has its answer already.
        named = job_id is not None
        try:
            if job_id is None:
                job_id = self.engine.persist(self._create, final, labels, None)
                if outcome.ok:
                    self._store(job_id, outcome)
                job_event(self.engine, _KIND[final["type"]], job_id, run=self.run)
            else:
                if outcome.ok and outcome.mimetype != jobs.DEFAULT_MIMETYPE:
                    self.engine.persist(
                        self.engine.api.update_labels,
                        job_id,
                        {jobs.MIMETYPE_LABEL: outcome.mimetype},
                    )
                if not outcome.ok and labels:
                    self.engine.persist(self.engine.api.update_labels, job_id, labels)
                self.engine.persist(self.engine.api.set_state, job_id, final)
                job_event(self.engine, _KIND[final["type"]], job_id, message=final.get("message"))
            logger.info("sync job %s of %s recorded after a delay", job_id, self.process_id)
            self.recorded(job_id, named=named)
        except PrefectManagerError as exc:
            logger.error("sync job of %s could not be recorded: %s", self.process_id, exc)


def run_sync(
    engine: Engine,
    process_id: str,
    processor: BaseProcessor,
    inputs: dict[str, Any],
    requested_outputs: dict[str, Any] | None,
    response: str,
    subscriber: dict[str, str] | None,
    *,
    jobs_url: str | None,
    owner: str | None = None,
    resolved: dict[str, Any] | None = None,
) -> SyncResult:
    """Run a sync job in this thread and record it; see the module docstring.

    ``resolved``: the inputs with their links read, for the processor (the
    flow run keeps ``inputs`` as the client sent them).
    """
    record = _Record(
        engine,
        process_id,
        job_parameters(inputs, requested_outputs, response, subscriber),
        response,
        subscriber,
        jobs_url,
        owner,
        requested_outputs,
    )
    if type(processor).set_job_id is not BaseProcessor.set_job_id:
        # The processor wants its job id while it runs: record it first.
        processor.set_job_id(record.begin())
    else:
        record.begin_after(engine.config.local.sync_visible_after)
    metrics.job_submitted(process_id, "sync")  # it runs now (a failed begin() made no job)
    with (
        reporting_to(record.report),
        capturing(record.logs, this_thread_only=True),
        metrics.watch(process_id),
    ):
        outcome = run_job(
            processor,
            inputs if resolved is None else resolved,
            requested_outputs,
            job_label=f"sync job of process {process_id}",
            store=engine.store,
            # A process writing an output itself needs its job: recorded then.
            job_id=lambda: _key(record.job_id or record.begin(), owner),
        )
    with metrics.finishing(process_id, outcome.ok):
        job_id = record.finish(outcome)
    if not outcome.ok:
        if job_id:
            notify_status(engine, engine.processes(), job_id, "failedUri", subscriber)
        return SyncResult(job_id, outcome, "application/json", None)
    requested, references = transmission(requested_outputs)
    raw = response == RequestedResponse.raw.value
    # results.raw_several: json: the process's own map of several outputs,
    # as pygeoapi's managers answer it (none streamed, none by reference).
    as_map = (
        raw
        and engine.config.results.raw_several == "json"
        and not (references or outcome.streamed)
        and values_map(outcome.outputs, outcome.mimetype, outcome.output_ids, outcome.media_types)
    )
    raw_several = (
        raw
        and not as_map
        and several_outputs(
            outcome.outputs, outcome.mimetype, outcome.output_ids, outcome.media_types, requested
        )
    )
    if job_id and (references or outcome.streamed or raw_several):
        # Links, outputs only the store holds, or several raw outputs
        # (multipart/related): answered from the store, streamed.
        key = ResultStore.key(job_id, owner)
        return _stored_answer(engine, job_id, key, outcome, jobs_url, subscriber)
    document = results_document(
        outcome.outputs, outcome.mimetype, outcome.output_ids, outcome.media_types
    )
    engine.callbacks.send(
        subscriber, "successUri", document, job=job_id or f"(sync, process {process_id})"
    )
    if response == RequestedResponse.document.value:
        return SyncResult(job_id, outcome, "application/json", document)
    several = None
    if not as_map:
        several = values_answer(
            outcome.outputs, outcome.mimetype, outcome.output_ids, outcome.media_types, requested
        )
    if several is not None:
        # Not stored yet (its record waits for Prefect): from memory.
        mimetype, body = deliver(several)
        return SyncResult(job_id, outcome, mimetype, body)
    named = one_of_several(
        outcome.outputs, outcome.mimetype, outcome.output_ids, outcome.media_types, requested
    )
    if named is not None:
        # One output named of several: that output by itself.
        return SyncResult(job_id, outcome, *named)
    return SyncResult(job_id, outcome, outcome.mimetype, outcome.outputs)


def _key(job_id: str, owner: str | None) -> str:
    return ResultStore.key(job_id, owner) if job_id else ""


def _stored_answer(
    engine: Engine,
    job_id: str,
    key: str,
    outcome: Outcome,
    jobs_url: str | None,
    subscriber: dict[str, str] | None,
) -> SyncResult:
    mimetype, outputs, document = answer_from_store(
        engine, job_id, key, jobs_url, with_document=bool(subscriber)
    )
    if document is not None:
        engine.callbacks.send(subscriber, "successUri", document, job=job_id)
    return SyncResult(job_id, outcome, mimetype, outputs)


def answer_from_store(
    engine: Engine, job_id: str, key: str, jobs_url: str | None, *, with_document: bool = False
) -> tuple[str, Any, dict[str, Any] | None]:
    """(media type, outputs, results document) of a finished sync job, read from the store.

    What pygeoapi's execute answer carries; the ``Link`` headers (and 204)
    of outputs by reference, and a streamed body, go to the request's
    exchange (:func:`deliver`). The results document (for callbacks) holds
    every output inline, so it is read only ``with_document``.
    """
    store = engine.store
    manifest = store.read_manifest(key)
    links = Links(store, key, job_id, jobs_url, engine.config.results.presign_seconds)
    results = document(store, key, manifest, links) if with_document else None
    as_map = engine.config.results.raw_several == "json"
    answer = results_answer(store, key, manifest, links, as_map=as_map)
    if answer is None:
        _, outputs = store.read(key)
        return manifest.mimetype, outputs, results
    mimetype, body = deliver(answer)
    return mimetype, body, results


def deliver(answer: Answer) -> tuple[str, Any]:
    """(media type, body for pygeoapi) of a sync answer; headers and streams via the exchange.

    Under this package's web layer (``exchange.streams``) a body of chunks
    is handed over as it is and pygeoapi carries an empty one; under
    pygeoapi's own apps it is joined.
    """
    exchange = current_exchange()
    exchange.links = answer.links
    exchange.no_content = answer.status == 204
    mimetype = answer.mimetype or "application/json"
    if isinstance(answer.body, bytes):
        if answer.mimetype == "application/json":
            return mimetype, json.loads(answer.body)
        return mimetype, answer.body
    if exchange.streams:
        exchange.body, exchange.body_size = answer.body, answer.size
        return mimetype, b""
    return mimetype, b"".join(answer.body)
