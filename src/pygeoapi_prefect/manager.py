"""The pygeoapi process manager: ``pygeoapi_prefect.manager.PrefectManager``.

Every job is a Prefect flow run (:mod:`pygeoapi_prefect.jobs.runs`); Prefect
is the only job database, so pygeoapi processes keep no job state of their
own. The manager is a thin adapter between pygeoapi's ``BaseManager`` API
and the process-wide :class:`~pygeoapi_prefect.execution.engine.Engine`,
which pygeoapi may build managers over as often as it likes (one per
``API`` object; Django: one per request).
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Mapping
from typing import Any

from pygeoapi.process.manager.base import BaseManager
from pygeoapi.util import JobStatus, RequestedProcessExecutionMode, RequestedResponse, Subscriber

from pygeoapi_prefect.config import ManagerConfig, load_config
from pygeoapi_prefect.execution import dispatch
from pygeoapi_prefect.execution.dismiss import dismiss
from pygeoapi_prefect.execution.engine import Engine, engine_for, engine_key
from pygeoapi_prefect.execution.joblogs import read_job_logs
from pygeoapi_prefect.jobs import listing
from pygeoapi_prefect.jobs import runs as jobs
from pygeoapi_prefect.jobs.answers import Answer
from pygeoapi_prefect.jobs.exchange import current_exchange, request_caller
from pygeoapi_prefect.jobs.query import JobQuery
from pygeoapi_prefect.jobs.results import ResultStore
from pygeoapi_prefect.prefect.api import PrefectAPI
from pygeoapi_prefect.prefect.states import state

logger = logging.getLogger(__name__)

__all__ = ["PrefectManager"]


class PrefectManager(BaseManager):
    """Runs pygeoapi processes as Prefect flow runs.

    Enable it in the pygeoapi config::

        server:
          manager:
            name: pygeoapi_prefect.manager.PrefectManager
            connection: http://127.0.0.1:4200/api   # else PREFECT_API_URL

    The constructor validates the config and does no I/O (pygeoapi also builds
    the manager to write its OpenAPI document); the engine of this config in
    this process is built on first use.

    Raises:
        ConfigError: the ``server.manager`` block is invalid.

    """

    #: ``<pygeoapi URL>/jobs``; when set, each new job's flow run carries it
    #: as the label ``pygeoapi.jobs_url`` (its job is ``<that>/<flow run id>``).
    #: The apps set it from ``server.url``.
    jobs_url: str | None = None
    pubsub: dict[str, Any] | None = None  #: pygeoapi's ``pubsub`` (job events); the apps set it

    def __init__(self, manager_def: dict[str, Any]) -> None:
        self._configured: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        super().__init__(manager_def)
        self.config: ManagerConfig = load_config(manager_def)
        self._engine_key = engine_key(self.config)  # not per request: the engine is looked up often
        self.is_async = True
        self.supports_subscribing = True
        #: Read by the pygeoapi change proposed in docs/pygeoapi-job-list-filters.patch.
        self.supports_job_filters = True

    def __repr__(self) -> str:
        return f"<PrefectManager> {self.config.connection or 'PREFECT_API_URL'}"

    @property
    def processes(self) -> collections.OrderedDict[str, dict[str, Any]]:
        """The processes of the pygeoapi config, then the published deployments."""
        config: ManagerConfig | None = getattr(self, "config", None)
        if config is None or not config.publish.enabled:
            # The very mapping pygeoapi's BaseManager.__init__ fills in.
            return self._configured
        return self.engine.processes()

    @processes.setter
    def processes(self, value: dict[str, dict[str, Any]]) -> None:
        self._configured = collections.OrderedDict(value)

    @property
    def engine(self) -> Engine:
        """This config's engine in this process (shared by every manager of the config)."""
        return engine_for(self.config, self._engine_key).use_pubsub(self.pubsub)

    @property
    def api(self) -> PrefectAPI:
        """The Prefect API client."""
        return self.engine.api

    @property
    def store(self) -> ResultStore:
        """The result store."""
        return self.engine.store

    def start(self) -> None:
        """Start this process's engine: lease, recovery of orphaned jobs, the automation."""
        self.engine.start()

    def close(self) -> None:
        """Close this process's engine of this config (running jobs get their grace)."""
        self.engine.close()

    def flow_run_url(self, job_id: str) -> str:
        """The page of the job's flow run in the Prefect UI."""
        return self.api.flow_run_url(job_id)

    # -- reading jobs ---------------------------------------------------------

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
        :mod:`pygeoapi_prefect.jobs.exchange`); ``status`` is pygeoapi's own.

        Raises:
            InvalidParameter: a filter value cannot be used (also a ValueError).
        """
        request_caller(self.config.auth.enabled)
        return listing.get_jobs(
            self.engine,
            self.processes,
            status=status,
            limit=limit,
            offset=offset,
            filters=filters,
            query=query,
        )

    def get_job(self, job_id: str) -> dict[str, Any]:
        """The job's status record.

        Raises:
            JobNotFound: no such job (or it was dismissed through the API).

        """
        request_caller(self.config.auth.enabled)
        return listing.get_job(self.api, self.processes, job_id)

    def get_job_result(self, job_id: str) -> tuple[str, Any]:
        """(media type, output) of a finished job, as the job asked for it."""
        request_caller(self.config.auth.enabled)
        return listing.get_job_result(self.engine, self.processes, job_id)

    def get_job_logs(self, job_id: str, *, limit: int, offset: int) -> list[dict[str, Any]]:
        """Up to ``limit`` log lines of a job from ``offset``, oldest first.

        The caller has looked the job up (:meth:`get_job`); ``job_id`` is its identifier.
        """
        return read_job_logs(self.api, job_id, limit=limit, offset=offset)

    def results_answer(self, job_id: str) -> Answer | None:
        """A finished job's results as asked for (by value or reference, raw or a document)."""
        request_caller(self.config.auth.enabled)
        settings = self.config.results
        return listing.results_answer(self.engine, self.processes, job_id, self.jobs_url, settings)

    def output_answer(self, job_id: str, output_id: str) -> Answer:
        """One output of a finished job (``GET /jobs/{jobId}/results/{outputId}``)."""
        request_caller(self.config.auth.enabled)
        return listing.output_answer(self.engine, self.processes, job_id, output_id)

    # -- writing jobs ---------------------------------------------------------

    def add_job(self, job_metadata: dict[str, Any]) -> str:
        """Record a job as a new flow run (pygeoapi's own API); returns its id."""
        status = JobStatus(job_metadata.get("status", JobStatus.accepted.value))
        process_id = job_metadata["process_id"]
        caller = request_caller(self.config.auth.enabled)
        labels: dict[str, Any] = {jobs.PROGRESS_LABEL: int(job_metadata.get("progress") or 0)}
        run = self.api.create_flow_run(
            flow_name=process_id,
            state=state(listing.STATES_BY_STATUS[status][0], job_metadata.get("message")),
            tags=jobs.job_tags(process_id, caller.owner_tag if caller else None),
            labels=jobs.new_job_labels(labels, self.jobs_url),
        )
        return str(run["id"])

    def update_job(self, job_id: str, update_dict: dict[str, Any]) -> bool:
        """Apply pygeoapi-style updates (status, message, progress) to a job.

        A dismissed job is left as it is (False). Raises JobNotFound for no such job.
        """
        run = listing.read_job_run(self.api, self.processes, job_id)
        current_exchange().runs.pop(run["id"], None)  # changed below: read anew after
        if jobs.job_from_flow_run(run)["status"] == JobStatus.dismissed.value:
            logger.warning("update of dismissed job %s refused", job_id)
            return False
        if "progress" in update_dict:
            self.api.update_labels(run["id"], {jobs.PROGRESS_LABEL: int(update_dict["progress"])})
        if "status" in update_dict or "message" in update_dict:
            status = JobStatus(update_dict.get("status") or jobs.job_from_flow_run(run)["status"])
            kind = listing.STATES_BY_STATUS[status][0]
            self.api.set_state(run["id"], state(kind, update_dict.get("message")))
        return True

    def delete_job(self, job_id: str) -> bool:
        """Dismiss a job: stop it, delete its results, and forget it (see :func:`dismiss`)."""
        request_caller(self.config.auth.enabled)
        dismiss(self.engine, self.processes, job_id)
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
        """Run a process as a job: in the request (sync), the local pool or a deployment.

        Returns:
            job id, media type, outputs, status, extra response headers.

        """
        request_caller(self.config.auth.enabled)
        # Our apps take the subscriber out of the body (web.contract): from the exchange.
        callbacks = subscriber if subscriber is not None else current_exchange().subscriber
        return dispatch.execute(
            self.engine,
            self.processes,
            process_id,
            self.get_processor(process_id),
            data_dict,
            execution_mode=execution_mode,
            requested_outputs=requested_outputs,
            subscriber=callbacks,
            requested_response=requested_response,
            jobs_url=self.jobs_url,
        )
