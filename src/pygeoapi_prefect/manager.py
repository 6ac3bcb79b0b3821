"""The pygeoapi process manager: ``pygeoapi_prefect.manager.PrefectManager``.

Every job is a Prefect flow run (see :mod:`pygeoapi_prefect.jobs.runs`); Prefect is
the only job database, so pygeoapi instances keep no state of their own.
Sync jobs run in the request; async jobs run in a pool of killable local
worker processes (:mod:`pygeoapi_prefect.execution.local`). Outputs go to the result
store (:mod:`pygeoapi_prefect.jobs.results`).
"""

from __future__ import annotations

import collections
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from pygeoapi.process.base import BaseProcessor
from pygeoapi.process.manager.base import BaseManager
from pygeoapi.util import (
    JobStatus,
    ProcessExecutionMode,
    RequestedProcessExecutionMode,
    RequestedResponse,
    Subscriber,
)

from pygeoapi_prefect.config import ManagerConfig, load_config
from pygeoapi_prefect.errors import (
    DeploymentMissing,
    InvalidInputs,
    JobNotFound,
    JobStillRunning,
    PrefectManagerError,
    PrefectRequestFailed,
    PrefectUnavailable,
    ProcessFailed,
)
from pygeoapi_prefect.execution import recovery
from pygeoapi_prefect.execution.callbacks import CallbackPolicy
from pygeoapi_prefect.execution.execute import JobRequest, Outcome, run_processor, store_outcome
from pygeoapi_prefect.execution.heartbeat import ensure_zombie_automation
from pygeoapi_prefect.execution.local import JobHooks, LocalRunner
from pygeoapi_prefect.execution.timers import TimerHandle, Timers
from pygeoapi_prefect.execution.validation import check_execute_request
from pygeoapi_prefect.jobs import runs as jobs
from pygeoapi_prefect.jobs.counting import CountCache
from pygeoapi_prefect.jobs.exchange import current_exchange
from pygeoapi_prefect.jobs.query import JobQuery, parse_job_query
from pygeoapi_prefect.jobs.results import Manifest, ResultStore, results_document
from pygeoapi_prefect.prefect.api import REJECTED, PrefectAPI, prefect_settings_api_url
from pygeoapi_prefect.processes import DeploymentProcessor, FlowProcessor, describe_deployment
from pygeoapi_prefect.progress import reporting_to

logger = logging.getLogger(__name__)

__all__ = ["PrefectManager"]

#: Prefect refuses pages larger than this.
MAX_PAGE = 200
#: How many candidate runs a duration filter looks at, at most.
MAX_DURATION_SCAN = 10_000
_NEWEST_FIRST = "EXPECTED_START_TIME_DESC"
#: Execute requests larger than this are not copied into the flow run's
#: parameters (they still run); Prefect caps parameters at 512 KB by default.
MAX_PARAMETERS_BYTES = 256 * 1024

_STATES_BY_STATUS: dict[JobStatus, list[str]] = {}
for _state_type, _status in jobs.STATUS_BY_STATE.items():
    _STATES_BY_STATUS.setdefault(_status, []).append(_state_type.value)


def _state(kind: str, message: str | None = None) -> dict[str, Any]:
    state: dict[str, Any] = {"type": kind, "name": kind.capitalize()}
    if message:
        state["message"] = message
    return state


class PrefectManager(BaseManager):
    """Runs pygeoapi processes as Prefect flow runs.

    Enable it in the pygeoapi config::

        server:
          manager:
            name: pygeoapi_prefect.manager.PrefectManager
            connection: http://127.0.0.1:4200/api   # else PREFECT_API_URL

    The constructor validates the config and does no I/O (pygeoapi also builds
    the manager to write its OpenAPI document); the Prefect client, the result
    store and the worker pool are created on first use.

    Raises:
        ConfigError: the ``server.manager`` block is invalid.

    """

    #: ``<pygeoapi URL>/jobs``; when set, each new job's flow run carries it
    #: as the label ``pygeoapi.jobs_url`` (its job is ``<that>/<flow run id>``).
    #: :mod:`pygeoapi_prefect.web.flask` sets it from ``server.url``.
    jobs_url: str | None = None

    def __init__(self, manager_def: dict[str, Any]) -> None:
        self._published: dict[str, dict[str, Any]] = {}
        self._published_at = -math.inf
        super().__init__(manager_def)
        self.config: ManagerConfig = load_config(manager_def)
        self.is_async = True
        self.supports_subscribing = True
        #: Read by the pygeoapi change proposed in docs/pygeoapi-job-list-filters.patch.
        self.supports_job_filters = True
        self.callbacks = CallbackPolicy(
            self.config.callbacks.allow,
            timeout=self.config.callbacks.timeout,
            retries=self.config.callbacks.retries,
        )
        self._lock = threading.Lock()
        self._api: PrefectAPI | None = None
        self._store: ResultStore | None = None
        self._runner: LocalRunner | None = None
        self._threads: ThreadPoolExecutor | None = None
        self._deployment_ids: dict[str, str] = {}
        #: Jobs of this instance created before this moment are from an earlier run.
        self._born = datetime.now(UTC)
        #: One thread for the sync jobs' "record it if still running" timers.
        self._timers = Timers()
        self._counts = CountCache(self.config.job_count_cache_seconds)

    def __repr__(self) -> str:
        return f"<PrefectManager> {self.config.connection or 'PREFECT_API_URL'}"

    # -- processes: the configured ones, and published deployments -----------

    @property
    def processes(self) -> collections.OrderedDict[str, dict[str, Any]]:
        """The processes of the pygeoapi config, then the published deployments."""
        published = self._published_processes()
        if not published:
            # The very mapping pygeoapi's BaseManager.__init__ fills in.
            return self._configured
        processes = collections.OrderedDict(self._configured)
        for process_id, resource in published.items():
            processes.setdefault(process_id, resource)  # the config wins
        return processes

    @processes.setter
    def processes(self, value: dict[str, dict[str, Any]]) -> None:
        self._configured = collections.OrderedDict(value)

    def _published_processes(self) -> dict[str, dict[str, Any]]:
        config = getattr(self, "config", None)
        if config is None or not config.publish.enabled:
            return {}
        if time.monotonic() - self._published_at < config.publish.refresh_seconds:
            return self._published
        try:
            deployments = self.api.deployments_tagged(config.publish.tag)
        except PrefectManagerError as exc:
            # Keep serving what was known, and wait a full period before
            # asking again (not once per request while Prefect is down).
            logger.warning("published deployments not refreshed: %s", exc)
            self._published_at = time.monotonic()
            return self._published
        published: dict[str, dict[str, Any]] = {}
        for deployment in deployments:
            process_id = jobs.process_id_of(deployment.get("tags") or []) or _slug(
                f"{deployment['flow_name']}-{deployment['name']}"
            )
            published[process_id] = {
                "type": "process",
                "processor": {
                    "name": "pygeoapi_prefect.processes.DeploymentProcessor",
                    "deployment": f"{deployment['flow_name']}/{deployment['name']}",
                    "metadata": describe_deployment(deployment, process_id),
                    "stores_results": jobs.process_id_of(deployment.get("tags") or []) is not None,
                },
            }
        self._published, self._published_at = published, time.monotonic()
        return published

    # -- lazily built parts -----------------------------------------------

    @property
    def api(self) -> PrefectAPI:
        """The Prefect API client, built on first use."""
        if self._api is None:
            url = self.config.connection or prefect_settings_api_url()
            if not url:
                raise PrefectUnavailable(
                    "No Prefect API is configured: set server.manager.connection "
                    "in the pygeoapi config or PREFECT_API_URL in the environment"
                )
            with self._lock:
                if self._api is None:
                    self._api = PrefectAPI(
                        url,
                        timeout=self.config.api_timeout,
                        write_concurrency=self.config.api_write_concurrency,
                    )
        return self._api

    @property
    def store(self) -> ResultStore:
        """The result store."""
        if self._store is None:
            results = self.config.results
            if results.block:
                self._store = ResultStore(block=results.block, api_url=self.api.api_url)
            else:
                self._store = ResultStore(self.config.results_url(), results.storage_options)
        return self._store

    @property
    def runner(self) -> LocalRunner:
        """The pool of worker processes for async jobs, started on first use."""
        if self._runner is None:
            api = self.api  # outside the lock, which building the client takes too
            started = False
            with self._lock:
                if self._runner is None:
                    self._runner = LocalRunner(
                        self.store,
                        JobHooks(
                            started=self._job_started,
                            finished=self._job_finished,
                            cancelled_elsewhere=self._job_cancelled_elsewhere,
                            killed=self._job_killed,
                        ),
                        max_workers=self.config.local.max_workers,
                        cancel_check_seconds=self.config.local.cancel_check_seconds,
                        api_url=api.api_url,
                        heartbeat_seconds=self.config.heartbeat.interval,
                    )
                    started = True
            if started and self.config.heartbeat.install_automation:
                self._background().submit(self._install_automation)
        return self._runner

    def _install_automation(self) -> None:
        try:
            ensure_zombie_automation(self.api, self.config.heartbeat.zombie_timeout)
        except PrefectManagerError as exc:
            logger.warning(
                "the zombie automation was not installed (server.manager.heartbeat): %s", exc
            )

    def start(self) -> None:
        """Install the zombie automation; take back the jobs accepted before a restart.

        Called once the app is loaded (not by the constructor, which also
        serves ``pygeoapi openapi``). Jobs Pending in Prefect with this
        instance's identity (``local.instance``) and created before this
        process started are queued again; the worker pool starts only if
        there are any. Retries while Prefect cannot be reached.
        """
        thread = threading.Thread(
            target=self._recover, name="pygeoapi-prefect-recover", daemon=True
        )
        thread.start()

    def _recover(self) -> None:
        if self.config.heartbeat.install_automation:
            # Also for jobs that only Prefect workers run (no local runner here).
            self._install_automation()
        delay = 1.0
        while True:
            try:
                taken = recovery.take_back(self, self._born)
            except PrefectManagerError as exc:
                logger.warning("jobs of an earlier run not taken back yet: %s", exc)
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            if taken:
                logger.info("took back %d job(s) accepted before a restart", taken)
            return

    def _background(self) -> ThreadPoolExecutor:
        if self._threads is None:
            with self._lock:
                if self._threads is None:
                    self._threads = ThreadPoolExecutor(
                        max_workers=4, thread_name_prefix="pygeoapi-prefect"
                    )
        return self._threads

    def flow_run_url(self, job_id: str) -> str:
        """The page of the job's flow run in the Prefect UI."""
        return f"{self.api.ui_url}/runs/flow-run/{job_id}"

    def close(self) -> None:
        """Stop the worker processes and close the Prefect connection."""
        if self._runner is not None:
            self._runner.shutdown()
            self._runner = None
        if self._threads is not None:
            self._threads.shutdown(wait=False)
            self._threads = None
        if self._api is not None:
            self._api.close()

    # -- reading jobs -------------------------------------------------------

    def _flow_run_filter(self, query: JobQuery) -> dict[str, Any] | None:
        """The Prefect ``FlowRunFilter`` for a job query (``None``: nothing can match)."""
        process_ids = [
            pid for pid in self.processes if query.process_ids is None or pid in query.process_ids
        ]
        if not process_ids or (query.types is not None and "process" not in query.types):
            return None
        flow_runs: dict[str, Any] = {
            "tags": {"all_": [jobs.JOB_TAG], "any_": [jobs.job_tags(pid)[1] for pid in process_ids]}
        }
        if query.statuses is not None:
            states = [state for status in query.statuses for state in _STATES_BY_STATUS[status]]
            flow_runs["state"] = {"type": {"any_": states}}
        if query.created_after is not None or query.created_before is not None:
            # For job runs the expected start time is their creation time.
            window: dict[str, str] = {}
            if query.created_after is not None:
                window["after_"] = query.created_after.isoformat()
            if query.created_before is not None:
                window["before_"] = query.created_before.isoformat()
            flow_runs["expected_start_time"] = window
        if query.filters_durations:
            # Only started jobs have a duration; one of at least minDuration
            # started at least that long ago. The rest is checked per run.
            started: dict[str, Any] = {"is_null_": False}
            if query.min_duration is not None:
                cutoff = datetime.now(UTC) - timedelta(seconds=query.min_duration)
                started["before_"] = cutoff.isoformat()
            flow_runs["start_time"] = started
        return flow_runs

    def get_jobs(
        self,
        status: JobStatus | None = None,
        limit: int | None = None,
        offset: int | None = None,
        *,
        filters: Mapping[str, list[str]] | None = None,
        query: JobQuery | None = None,
    ) -> dict[str, Any]:
        """One page of jobs, newest first, filtered and paged by the Prefect server.

        Only jobs of processes in this pygeoapi config are listed. The
        job-list filters come from ``query``, else ``filters`` (raw query
        parameters, as the pygeoapi change in docs/ would pass them), else
        the ``GET /jobs`` request being served (see
        :mod:`pygeoapi_prefect.jobs.query`); ``status`` is pygeoapi's own.

        Raises:
            InvalidParameter: a filter value cannot be used (also a ValueError).
        """
        if query is None and filters:
            query = parse_job_query(filters)
        query = query or current_exchange().query or JobQuery()
        if status is not None:
            query = replace(query, statuses=(JobStatus(status),))
        limit = limit or 10
        offset = offset or 0
        flow_runs = self._flow_run_filter(query)
        runs: list[dict[str, Any]]
        if flow_runs is None:
            runs, matched = [], 0
        elif query.filters_durations:
            runs, matched = self._runs_by_duration(flow_runs, query, limit, offset)
        else:
            runs, matched = self._page_and_count(flow_runs, limit, offset)
        current_exchange().number_matched = matched
        return {
            "jobs": [jobs.job_from_flow_run(run) for run in runs],
            "numberMatched": matched,
        }

    def _page_and_count(
        self, flow_runs: dict[str, Any], limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        # The page and the count are independent: ask for both at once. A
        # page shorter than asked for (with something on it, or the first)
        # tells the count itself, which is then not waited for.
        key = self._counts.key(flow_runs)
        cached = self._counts.get(key)
        counting = None
        if cached is None:
            counting = self._background().submit(self._count, key, flow_runs)
        try:
            runs = self._page(flow_runs, limit, offset)
        except BaseException:
            if counting is not None:
                counting.cancel()
            raise
        if len(runs) < limit and (runs or offset == 0):
            matched = offset + len(runs)
            self._counts.put(key, matched)
            return runs, matched
        if counting is None:
            assert cached is not None
            return runs, cached
        return runs, counting.result()

    def _count(self, key: str, flow_runs: dict[str, Any]) -> int:
        matched = self.api.count_flow_runs(flow_runs)
        self._counts.put(key, matched)
        return matched

    def _page(self, flow_runs: dict[str, Any], limit: int, offset: int) -> list[dict[str, Any]]:
        # Prefect serves at most MAX_PAGE runs a call; pygeoapi's next link
        # assumes the whole limit was served.
        runs: list[dict[str, Any]] = []
        while len(runs) < limit:
            size = min(MAX_PAGE, limit - len(runs))
            page = self.api.filter_flow_runs(
                flow_runs, sort=_NEWEST_FIRST, limit=size, offset=offset + len(runs)
            )
            runs.extend(page)
            if len(page) < size:
                break
        return runs

    def _runs_by_duration(
        self, flow_runs: dict[str, Any], query: JobQuery, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        # Prefect cannot filter on durations: walk the (server-narrowed)
        # candidates newest first and keep those whose duration fits.
        now = datetime.now(UTC)
        matched: list[dict[str, Any]] = []
        for start in range(0, MAX_DURATION_SCAN, MAX_PAGE):
            page = self.api.filter_flow_runs(
                flow_runs, sort=_NEWEST_FIRST, limit=MAX_PAGE, offset=start
            )
            for run in page:
                duration = jobs.run_duration(run, now)
                if duration is None:
                    continue
                if query.min_duration is not None and duration < query.min_duration:
                    continue
                if query.max_duration is not None and duration > query.max_duration:
                    continue
                matched.append(run)
            if len(page) < MAX_PAGE:
                break
        else:
            logger.warning(
                "duration filter looked at the newest %d candidate jobs only", MAX_DURATION_SCAN
            )
        return matched[offset : offset + limit], len(matched)

    def _read_job_run(self, job_id: str) -> dict[str, Any]:
        canonical = jobs.normalise_job_id(job_id)
        run = self.api.read_flow_run(canonical) if canonical else None
        if (
            run is None
            or jobs.JOB_TAG not in (run.get("tags") or [])
            or jobs.process_id_of(run["tags"]) not in self.processes
        ):
            raise JobNotFound(f"No job with id {job_id!r}")
        return run

    def get_job(self, job_id: str) -> dict[str, Any]:
        """The job's status record.

        Raises:
            JobNotFound: no such job (or it was dismissed through the API).

        """
        return jobs.job_from_flow_run(self._read_job_run(job_id))

    def get_job_result(self, job_id: str) -> tuple[str, Any]:
        """(media type, output) of a finished job, as the job asked for it.

        A job run with ``response: document`` gets the OGC 1.0 results
        document (a map keyed by output id); otherwise the output is returned
        as the process produced it.
        """
        canonical = jobs.normalise_job_id(job_id)
        if canonical is None:
            raise JobNotFound(f"No job with id {job_id!r}")
        manifest, outputs = self.store.read(canonical)  # ResultNotFound: a 404
        if manifest.response == RequestedResponse.document.value:
            return "application/json", results_document(
                outputs, manifest.mimetype, manifest.output_ids
            )
        return manifest.mimetype, outputs

    def stream_result(self, job_id: str) -> tuple[Manifest, Iterator[bytes]] | None:
        """The raw output of a finished job as chunks, when it can be streamed.

        ``None`` when the answer is not a stream (a results document, a JSON
        output, a job that has not succeeded): pygeoapi answers those itself.
        """
        try:
            job = self.get_job(job_id)
        except JobNotFound:
            return None
        if job["status"] != JobStatus.successful.value:
            return None
        manifest = self.store.read_manifest(job["identifier"])
        if manifest.response != RequestedResponse.raw.value or manifest.encoding == "json":
            return None
        return manifest, self.store.iter_output(job["identifier"])

    # -- writing jobs ---------------------------------------------------------

    def _create_run(
        self,
        process_id: str,
        state: dict[str, Any],
        *,
        labels: dict[str, Any],
        parameters: dict[str, Any] | None = None,
    ) -> str:
        run = self.api.create_flow_run(
            flow_name=process_id,
            state=state,
            tags=jobs.job_tags(process_id),
            labels=self._origin(labels),
            parameters=parameters,
        )
        return str(run["id"])

    def _origin(self, labels: dict[str, Any]) -> dict[str, Any]:
        # A new job's labels, with the way back to pygeoapi from its flow run.
        return {**labels, jobs.JOBS_URL_LABEL: self.jobs_url} if self.jobs_url else labels

    def add_job(self, job_metadata: dict[str, Any]) -> str:
        """Record a job as a new flow run; returns its id (the flow run id)."""
        status = JobStatus(job_metadata.get("status", JobStatus.accepted.value))
        kind = _STATES_BY_STATUS[status][0]
        return self._create_run(
            job_metadata["process_id"],
            _state(kind, job_metadata.get("message")),
            labels={jobs.PROGRESS_LABEL: int(job_metadata.get("progress") or 0)},
        )

    def update_job(self, job_id: str, update_dict: dict[str, Any]) -> bool:
        """Apply pygeoapi-style updates (status, message, progress) to a job."""
        run = self._read_job_run(job_id)
        if "progress" in update_dict:
            self.api.update_labels(run["id"], {jobs.PROGRESS_LABEL: int(update_dict["progress"])})
        if "status" in update_dict or "message" in update_dict:
            status = JobStatus(update_dict.get("status") or jobs.job_from_flow_run(run)["status"])
            kind = _STATES_BY_STATUS[status][0]
            self.api.set_state(run["id"], _state(kind, update_dict.get("message")), force=True)
        return True

    def delete_job(self, job_id: str) -> bool:
        """Dismiss a job: stop it, delete its results, and forget it.

        The run is moved to Cancelling, which Prefect will not let become
        Running or Completed any more, whichever pygeoapi instance (or
        worker) holds it; the holder kills it and finishes it as Cancelled.
        The flow run stays in Prefect as history (tagged
        ``pygeoapi.dismissed``); for pygeoapi the job is gone (404).
        """
        run = self._read_job_run(job_id)
        flow_run_id = run["id"]
        if jobs.job_from_flow_run(run)["status"] in (
            JobStatus.accepted.value,
            JobStatus.running.value,
        ):
            self.api.set_state(
                flow_run_id, _state("CANCELLING", "Dismissed through the OGC API"), force=True
            )
            if self._runner is not None and self._runner.dismiss(flow_run_id):
                # It was ours and nothing of it runs any more.
                self.api.set_state(
                    flow_run_id, _state("CANCELLED", "Dismissed through the OGC API"), force=True
                )
        self.store.delete(flow_run_id)
        tags = [t for t in run.get("tags") or [] if t != jobs.JOB_TAG]
        self.api.update_tags(flow_run_id, [jobs.DISMISSED_TAG, *tags])
        logger.info("dismissed job %s", flow_run_id)
        return True

    # -- execution ------------------------------------------------------------

    def execute_process(
        self,
        process_id: str,
        data_dict: dict[str, Any],
        execution_mode: RequestedProcessExecutionMode | None = None,
        requested_outputs: dict[str, Any] | None = None,
        subscriber: Subscriber | None = None,
        requested_response: str | None = RequestedResponse.raw.value,
    ) -> tuple[str, str, Any, JobStatus, dict[str, str] | None]:
        """Run a process as a job: in the request (sync) or in the pool (async).

        Returns:
            job id, media type, outputs, status, extra response headers.

        """
        processor = self.get_processor(process_id)
        if self.config.validate_inputs:
            check_execute_request(process_id, processor.metadata, data_dict, requested_outputs)
        callbacks = _subscriber(subscriber)
        self.callbacks.check(callbacks)
        response = requested_response or RequestedResponse.raw.value
        run_async, headers = self._choose_mode(processor, execution_mode)
        deployment = (self.processes[process_id].get("processor") or {}).get("deployment")
        if deployment:
            job_id, mimetype, outputs, status = self._run_deployment(
                process_id,
                processor,
                deployment,
                data_dict,
                requested_outputs,
                response,
                callbacks,
                wait=not run_async,
            )
            return job_id, mimetype, outputs, status, headers
        if run_async:
            job_id = self._submit_async(
                process_id, data_dict, requested_outputs, response, callbacks
            )
            return job_id, "application/json", None, JobStatus.accepted, headers
        job_id, mimetype, outputs = self._execute_sync(
            process_id, processor, data_dict, requested_outputs, response, callbacks
        )
        return job_id, mimetype, outputs, JobStatus.successful, headers

    def _choose_mode(
        self,
        processor: BaseProcessor,
        execution_mode: RequestedProcessExecutionMode | None,
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

    def _parameters(
        self,
        inputs: dict[str, Any],
        requested_outputs: dict[str, Any] | None,
        response: str,
        subscriber: dict[str, str] | None,
    ) -> dict[str, Any]:
        # Shown in the Prefect UI with the run; very large requests are left out.
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

    def _submit_async(
        self,
        process_id: str,
        inputs: dict[str, Any],
        requested_outputs: dict[str, Any] | None,
        response: str,
        subscriber: dict[str, str] | None,
    ) -> str:
        runner = self.runner  # started before the job exists: a failure leaves no orphan run
        job_id = self._create_run(
            process_id,
            _state("PENDING", "Job accepted and waiting to run"),
            labels={
                jobs.PROGRESS_LABEL: 0,
                jobs.RESPONSE_LABEL: response,
                jobs.INSTANCE_LABEL: self.config.instance_id(),
            },
            parameters=self._parameters(inputs, requested_outputs, response, subscriber),
        )
        runner.submit(
            JobRequest(
                job_id=job_id,
                process_id=process_id,
                process_conf=self.processes[process_id],
                inputs=inputs,
                requested_outputs=requested_outputs,
                response=response,
                subscriber=subscriber,
            )
        )
        logger.debug("job %s of process %s accepted", job_id, process_id)
        return job_id

    def _execute_sync(
        self,
        process_id: str,
        processor: BaseProcessor,
        inputs: dict[str, Any],
        requested_outputs: dict[str, Any] | None,
        response: str,
        subscriber: dict[str, str] | None,
    ) -> tuple[str, str, Any]:
        record = _SyncRecord(
            self,
            process_id,
            self._parameters(inputs, requested_outputs, response, subscriber),
            response,
            subscriber,
        )
        if type(processor).set_job_id is not BaseProcessor.set_job_id:
            # The processor wants its job id while it runs: record it first.
            processor.set_job_id(record.begin())
        else:
            record.begin_after(self.config.local.sync_visible_after)
        with reporting_to(record.report):
            outcome = run_processor(
                processor, inputs, requested_outputs, job_label=f"sync job of process {process_id}"
            )
        job_id = record.finish(outcome)
        if not outcome.ok:
            self._notify_status(job_id, "failedUri", subscriber)
            current_exchange().failed_job_id = job_id
            raise ProcessFailed(
                outcome.message,
                job_id=job_id,
                http_status=outcome.http_status,
                ogc_code=outcome.ogc_code,
            )
        document = results_document(outcome.outputs, outcome.mimetype, outcome.output_ids)
        self.callbacks.send(subscriber, "successUri", document)
        if response == RequestedResponse.document.value:
            return job_id, "application/json", document
        return job_id, outcome.mimetype, outcome.outputs

    def _run_deployment(
        self,
        process_id: str,
        processor: BaseProcessor,
        deployment: str,
        inputs: dict[str, Any],
        requested_outputs: dict[str, Any] | None,
        response: str,
        subscriber: dict[str, str] | None,
        *,
        wait: bool,
    ) -> tuple[str, str, Any, JobStatus]:
        # A Prefect worker runs the job (pygeoapi_prefect.deployed), writing
        # its output to the result store; here it is only created, and
        # awaited for a sync request.
        deployment_id = self._deployment_ids.get(deployment)
        if deployment_id is None:
            deployment_id = self.api.deployment_id(deployment)
            if deployment_id is None:
                raise DeploymentMissing(
                    f"Process {process_id!r} runs on the Prefect deployment {deployment!r}, "
                    "which does not exist: run `pygeoapi-prefect deploy-process-as-flow "
                    f"{process_id}`"
                )
            self._deployment_ids[deployment] = deployment_id
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
            parameters: dict[str, Any] = dict(inputs)  # only the flow's own parameters
        elif isinstance(processor, FlowProcessor | DeploymentProcessor):
            parameters = {**inputs, **ours}
        else:
            parameters = {"inputs": inputs, "outputs": requested_outputs, **ours}
        try:
            run = self.api.create_deployment_run(
                deployment_id,
                parameters=parameters,
                tags=jobs.job_tags(process_id),
                labels=self._origin({jobs.RESPONSE_LABEL: response}),
            )
        except PrefectRequestFailed as exc:
            # Deleted and made again in Prefect since it was cached?
            self._deployment_ids.pop(deployment, None)
            if exc.status != 404:
                raise
            raise DeploymentMissing(
                f"The Prefect deployment {deployment!r} of process {process_id!r} is gone; "
                f"run `pygeoapi-prefect deploy-process-as-flow {process_id}`"
            ) from exc
        job_id = str(run["id"])
        if not wait:
            return job_id, "application/json", None, JobStatus.accepted
        deadline = time.monotonic() + self.config.deployments.sync_timeout
        while True:
            job = self.get_job(job_id)
            if job["status"] not in (JobStatus.accepted.value, JobStatus.running.value):
                break
            if time.monotonic() > deadline:
                raise JobStillRunning(
                    f"Job {job_id} is still {job['status']} after "
                    f"{self.config.deployments.sync_timeout:g} s; it goes on: "
                    f"follow it at /jobs/{job_id}"
                )
            time.sleep(self.config.deployments.poll_seconds)
        if job["status"] != JobStatus.successful.value:
            current_exchange().failed_job_id = job_id
            raise ProcessFailed(job["message"], job_id=job_id)
        mimetype, outputs = self.get_job_result(job_id)
        return job_id, mimetype, outputs, JobStatus.successful

    def _notify_status(self, job_id: str, key: str, subscriber: dict[str, str] | None) -> None:
        if not subscriber or not subscriber.get(key):
            return
        try:
            document = jobs.status_document(self.get_job(job_id))
        except PrefectManagerError as exc:  # a callback never fails a job
            logger.warning("no %s callback for job %s: %s", key, job_id, exc)
            return
        self.callbacks.send(subscriber, key, document)

    def _notify_results(self, job_id: str, subscriber: dict[str, str] | None) -> None:
        if not subscriber or not subscriber.get("successUri"):
            return
        try:
            manifest, outputs = self.store.read(job_id)
        except PrefectManagerError as exc:
            logger.warning("no successUri callback for job %s: %s", job_id, exc)
            return
        document = results_document(outputs, manifest.mimetype, manifest.output_ids)
        self.callbacks.send(subscriber, "successUri", document)

    # -- hooks of the local runner (called from its threads) ------------------

    def _job_started(self, request: JobRequest) -> bool:
        running = _state("RUNNING", "Job running")
        # The same transition id from any instance: Prefect rejects a second
        # Running proposal for the job, so two instances never both run it.
        running["state_details"] = {"transition_id": recovery.running_transition_id(request.job_id)}
        result = _persist(self.api.set_state, request.job_id, running)
        if result.get("status") in (REJECTED, "ABORT"):
            current = (result.get("state") or {}).get("type")
            if current in ("CANCELLING", "CANCELLED"):
                # Dismissed meanwhile (Cancelling): finish the cancellation.
                logger.info("job %s was dismissed before it started", request.job_id)
                self._finish_cancelled(request.job_id)
            else:
                logger.info("job %s is %s elsewhere: not run here", request.job_id, current)
            return False
        self._notify_status(request.job_id, "inProgressUri", request.subscriber)
        return True

    def _job_finished(self, request: JobRequest, outcome: Outcome) -> None:
        if outcome.ok:
            if outcome.mimetype != jobs.DEFAULT_MIMETYPE:
                # Progress 100 follows from Completed; only a media type other
                # than the default costs a write of its own.
                _persist(
                    self.api.update_labels,
                    request.job_id,
                    {jobs.MIMETYPE_LABEL: outcome.mimetype},
                )
            final = _state("COMPLETED", "Job complete")
        else:
            final = _state("FAILED", outcome.message)
        if _persist(self.api.set_state, request.job_id, final).get("status") == REJECTED:
            # Cancelled in Prefect after the last check: the output goes.
            self._finish_cancelled(request.job_id)
        elif outcome.ok:
            self._notify_results(request.job_id, request.subscriber)
        else:
            self._notify_status(request.job_id, "failedUri", request.subscriber)

    def _job_cancelled_elsewhere(self, request: JobRequest) -> bool:
        run = self.api.read_flow_run(request.job_id)
        return run is None or run.get("state_type") in ("CANCELLING", "CANCELLED")

    def _job_killed(self, request: JobRequest) -> None:
        self._finish_cancelled(request.job_id)

    def _finish_cancelled(self, job_id: str) -> None:
        # Nothing of the job runs any more: drop its output, and end a
        # cancellation asked for elsewhere as a worker would.
        self.store.delete(job_id)
        run = self.api.read_flow_run(job_id)
        if run is not None and run.get("state_type") == "CANCELLING":
            self.api.set_state(
                job_id, _state("CANCELLED", "Cancelled: the job's process was stopped"), force=True
            )


#: Pauses between attempts to record a job step in Prefect (the last repeats).
_PERSIST_DELAYS = (0.5, 1.0, 2.0, 4.0, 5.0)
#: How long a job step is retried while Prefect is out of reach.
PERSIST_SECONDS = 600.0


def _persist(call: Callable[..., Any], *args: Any) -> Any:
    """Call a Prefect API method, retrying while Prefect is out of reach.

    Used for the steps of a job already accepted: losing one would leave the
    job stuck, while the client is not waiting for it. A Prefect outage of up
    to :data:`PERSIST_SECONDS` delays the job instead of losing it.
    """
    deadline = time.monotonic() + PERSIST_SECONDS
    attempt = 0
    while True:
        try:
            return call(*args)
        except PrefectUnavailable:
            if time.monotonic() > deadline:
                raise
            delay = _PERSIST_DELAYS[min(attempt, len(_PERSIST_DELAYS) - 1)]
            attempt += 1
            logger.warning("Prefect unreachable; retrying in %.1f s", delay)
            time.sleep(delay)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _subscriber(subscriber: Subscriber | None) -> dict[str, str] | None:
    # pygeoapi's Subscriber, as the OGC keys (what travels with the job).
    if subscriber is None:
        return None
    found = {
        "successUri": subscriber.success_uri,
        "inProgressUri": subscriber.in_progress_uri,
        "failedUri": subscriber.failed_uri,
    }
    return {key: value for key, value in found.items() if value}


class _SyncRecord:
    """The flow run of one sync job, created as late as the job allows.

    A job that ends within ``sync_visible_after`` seconds is recorded in one
    API call, in its final state. A slower one is recorded as Running once
    that time has passed (so the Prefect UI shows it while it runs), and moved
    to its final state at the end.
    """

    def __init__(
        self,
        manager: PrefectManager,
        process_id: str,
        parameters: dict[str, Any],
        response: str,
        subscriber: dict[str, str] | None,
    ) -> None:
        self.manager = manager
        self.subscriber = subscriber
        self.process_id = process_id
        self.parameters = parameters
        self.response = response
        self._lock = threading.Lock()
        self._begun = False
        self._finishing = False
        self._created = threading.Event()
        self._timer: TimerHandle | None = None
        self.job_id: str | None = None
        self.error: PrefectManagerError | None = None

    def begin(self) -> str:
        """Create the flow run as Running now; returns the job id."""
        with self._lock:
            if self._finishing:
                return ""
            self._begun = True
        try:
            self.job_id = self.manager._create_run(
                self.process_id,
                _state("RUNNING", "Job running"),
                labels={jobs.PROGRESS_LABEL: 0, jobs.RESPONSE_LABEL: self.response},
                parameters=self.parameters,
            )
        except PrefectManagerError as exc:
            self.error = exc
            raise
        finally:
            self._created.set()
        self.manager._notify_status(self.job_id, "inProgressUri", self.subscriber)
        return self.job_id

    def report(self, percent: int, message: str | None) -> None:
        """Store progress once the job is recorded (a fast job's is not)."""
        if self._created.is_set() and self.job_id:
            labels: dict[str, Any] = {jobs.PROGRESS_LABEL: percent}
            if message is not None:
                labels[jobs.MESSAGE_LABEL] = message
            self.manager.api.update_labels(self.job_id, labels)

    def begin_after(self, seconds: float) -> None:
        """Call :meth:`begin` in the background if the job is still running then."""
        self._timer = self.manager._timers.call_later(seconds, self._begin_quietly)

    def _begin_quietly(self) -> None:
        try:
            self.begin()
        except PrefectManagerError:
            logger.warning("could not record a running sync job of %s", self.process_id)

    def finish(self, outcome: Outcome) -> str:
        """Record the final state (and store the output); returns the job id."""
        if self._timer is not None:
            self._timer.cancel()
        with self._lock:
            self._finishing = True
            begun = self._begun
        manager = self.manager
        labels: dict[str, Any] = {jobs.RESPONSE_LABEL: self.response}
        if outcome.ok:
            labels |= {jobs.PROGRESS_LABEL: 100, jobs.MIMETYPE_LABEL: outcome.mimetype}
            final = _state("COMPLETED", "Job complete")
        else:
            final = _state("FAILED", outcome.message)
        if begun:
            self._created.wait(manager.config.api_timeout * 2)
            if self.error is not None or self.job_id is None:
                raise self.error or PrefectUnavailable("The job could not be recorded in Prefect")
            job_id = self.job_id
            try:
                if outcome.ok:
                    store_outcome(manager.store, job_id, outcome, self.response)
                    manager.api.update_labels(job_id, labels)
                result = manager.api.set_state(job_id, final)
            except PrefectManagerError as exc:
                logger.warning("sync job %s could not be finished: %s", job_id, exc)
                _persist(
                    manager.api.set_state,
                    job_id,
                    _state("FAILED", f"The job could not be finished: {exc.message}"),
                )
                raise
            if result.get("status") == REJECTED:
                manager._finish_cancelled(job_id)
                raise JobNotFound(f"Job {job_id} was dismissed while it ran")
            return job_id
        job_id = manager._create_run(
            self.process_id, final, labels=labels, parameters=self.parameters
        )
        if outcome.ok:
            try:
                store_outcome(manager.store, job_id, outcome, self.response)
            except PrefectManagerError:
                manager.api.set_state(
                    job_id, _state("FAILED", "The job's output could not be stored"), force=True
                )
                raise
        return job_id
