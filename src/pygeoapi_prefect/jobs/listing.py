"""Reading jobs: one job, its results, and the job list, filtered and paged by Prefect.

Functions of a :class:`Backend` (the engine of the process: the Prefect
client, the result store, the count cache and a small thread pool) and of
the processes a manager serves; they hold no state of their own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from pygeoapi.util import JobStatus, RequestedResponse

from pygeoapi_prefect.config import ResultStoreConfig
from pygeoapi_prefect.errors import (
    InvalidParameter,
    JobNotFound,
    PrefectManagerError,
    ResultNotFound,
    ResultNotReady,
)
from pygeoapi_prefect.jobs import answers
from pygeoapi_prefect.jobs import runs as jobs
from pygeoapi_prefect.jobs.answers import Answer, Links
from pygeoapi_prefect.jobs.counting import CountCache
from pygeoapi_prefect.jobs.exchange import current_exchange
from pygeoapi_prefect.jobs.owners import Caller, owner_of, owner_tag
from pygeoapi_prefect.jobs.query import JobQuery, parse_job_query
from pygeoapi_prefect.jobs.results import Manifest, ResultStore, results_document
from pygeoapi_prefect.prefect.api import PrefectAPI

logger = logging.getLogger(__name__)

__all__ = [
    "STATES_BY_STATUS",
    "Backend",
    "flow_run_filter",
    "get_job",
    "get_job_result",
    "get_jobs",
    "output_answer",
    "read_job_run",
    "results_answer",
    "stored_manifest",
]

#: Prefect refuses pages larger than this.
MAX_PAGE = 200
#: How many candidate runs a duration filter looks at, at most.
MAX_DURATION_SCAN = 10_000
_NEWEST_FIRST = "EXPECTED_START_TIME_DESC"

STATES_BY_STATUS: dict[JobStatus, list[str]] = {}
for _state_type, _status in jobs.STATUS_BY_STATE.items():
    STATES_BY_STATUS.setdefault(_status, []).append(_state_type)


class Threads(Protocol):
    """Threads that run a call off the request path (the engine's ``DaemonPool``)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]: ...  # noqa: D102


class Backend(Protocol):
    """What reading jobs needs of the process's engine."""

    @property
    def api(self) -> PrefectAPI: ...  # noqa: D102

    @property
    def store(self) -> ResultStore: ...  # noqa: D102

    counts: CountCache

    def background(self) -> Threads: ...  # noqa: D102


def _owner_tag(query: JobQuery, caller: Caller | None) -> str | None | bool:
    # The owner tag every listed run must have (None: any; False: nothing can match).
    if caller is not None and not caller.admin:
        if query.owner is not None and query.owner != caller.user:
            return False
        return caller.owner_tag
    return None if query.owner is None else owner_tag(query.owner)


def flow_run_filter(
    query: JobQuery, process_ids: Iterator[str] | list[str], caller: Caller | None = None
) -> dict[str, Any] | None:
    """The Prefect ``FlowRunFilter`` for a job query (``None``: nothing can match).

    With a ``caller`` that is not an admin, only that caller's jobs match.
    """
    wanted = [pid for pid in process_ids if query.process_ids is None or pid in query.process_ids]
    required = _owner_tag(query, caller)
    if (
        not wanted
        or required is False
        or (query.types is not None and "process" not in query.types)
    ):
        return None
    flow_runs: dict[str, Any] = {
        "tags": {
            "all_": [jobs.JOB_TAG] + ([required] if isinstance(required, str) else []),
            "any_": [jobs.job_tags(pid)[1] for pid in wanted],
        }
    }
    if query.statuses is not None:
        states = [state for status in query.statuses for state in STATES_BY_STATUS[status]]
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
    backend: Backend,
    processes: Mapping[str, Any],
    *,
    status: JobStatus | None = None,
    limit: int | None = None,
    offset: int | None = None,
    filters: Mapping[str, list[str]] | None = None,
    query: JobQuery | None = None,
) -> dict[str, Any]:
    """One page of jobs, newest first, filtered and paged by the Prefect server.

    See :meth:`pygeoapi_prefect.manager.PrefectManager.get_jobs`.
    """
    if query is None and filters:
        query = parse_job_query(filters)
    query = query or current_exchange().query or JobQuery()
    if status is not None:
        query = replace(query, statuses=(JobStatus(status),))
    limit = limit or 10
    offset = offset or 0
    flow_runs = flow_run_filter(query, list(processes), current_exchange().caller)
    runs: list[dict[str, Any]]
    if flow_runs is None:
        runs, matched = [], 0
    elif query.filters_durations:
        runs, matched = _runs_by_duration(backend, flow_runs, query, limit, offset)
    else:
        runs, matched = _page_and_count(backend, flow_runs, limit, offset)
    current_exchange().number_matched = matched
    return {"jobs": [jobs.job_from_flow_run(run) for run in runs], "numberMatched": matched}


def _page_and_count(
    backend: Backend, flow_runs: dict[str, Any], limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    # The page and the count are independent: ask for both at once. A page
    # shorter than asked for (with something on it, or the first) tells the
    # count itself, which is then not waited for.
    counts = backend.counts
    key = counts.key(flow_runs)
    cached = counts.get(key)
    counting = None
    if cached is None:
        counting = backend.background().submit(_count, backend, key, flow_runs)
    try:
        runs = _page(backend.api, flow_runs, limit, offset)
    except BaseException:
        if counting is not None:
            counting.cancel()
        raise
    if len(runs) < limit and (runs or offset == 0):
        matched = offset + len(runs)
        counts.put(key, matched)
        return runs, matched
    if counting is None:
        assert cached is not None
        return runs, cached
    return runs, counting.result()


def _count(backend: Backend, key: str, flow_runs: dict[str, Any]) -> int:
    matched = backend.api.count_flow_runs(flow_runs)
    backend.counts.put(key, matched)
    return matched


def _page(api: PrefectAPI, flow_runs: dict[str, Any], limit: int, offset: int) -> list[Any]:
    # Prefect serves at most MAX_PAGE runs a call; pygeoapi's next link
    # assumes the whole limit was served.
    runs: list[dict[str, Any]] = []
    while len(runs) < limit:
        size = min(MAX_PAGE, limit - len(runs))
        page = api.filter_flow_runs(
            flow_runs, sort=_NEWEST_FIRST, limit=size, offset=offset + len(runs)
        )
        runs.extend(page)
        if len(page) < size:
            break
    return runs


def _runs_by_duration(
    backend: Backend, flow_runs: dict[str, Any], query: JobQuery, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    # Prefect cannot filter on durations: walk the (server-narrowed)
    # candidates newest first and keep those whose duration fits.
    now = datetime.now(UTC)
    matched: list[dict[str, Any]] = []
    for start in range(0, MAX_DURATION_SCAN, MAX_PAGE):
        page = backend.api.filter_flow_runs(
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


#: The run states of a finished job: its run changes no more (a dismiss drops it).
_SETTLED = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})


def read_job_run(api: PrefectAPI, processes: Mapping[str, Any], job_id: str) -> dict[str, Any]:
    """The flow run of a job of these processes; a finished one is read once a request.

    A second lookup of the same finished job in the same request (pygeoapi's
    ``get_job`` and then our results answer) reuses the run of the first
    (:attr:`~pygeoapi_prefect.jobs.exchange.RequestExchange.runs`); code
    that changes the run drops it there. A queued or running job's run is
    read every time: a request may wait for it to change (a sync job on a
    deployment polls it).

    Raises:
        JobNotFound: no such job (unknown, malformed, dismissed, another
            config's, or another user's when the request has a caller).

    """
    canonical = jobs.normalise_job_id(job_id)
    exchange = current_exchange()
    run = exchange.runs.get(canonical) if canonical else None
    if run is None and canonical:
        # Once a request: pygeoapi's own lookup and ours read the same run.
        run = api.read_flow_run(canonical)
        if run is not None and run.get("state_type") in _SETTLED:
            exchange.runs[canonical] = run
    caller = exchange.caller
    if (
        run is None
        or jobs.JOB_TAG not in (run.get("tags") or [])
        or jobs.process_id_of(run["tags"]) not in processes
        # Another user's job is not found, rather than forbidden: a 403
        # would tell that the id exists.
        or (caller is not None and not caller.may_see(run["tags"]))
    ):
        raise JobNotFound(f"No job with id {job_id!r}")
    return run


def get_job(api: PrefectAPI, processes: Mapping[str, Any], job_id: str) -> dict[str, Any]:
    """The job's pygeoapi status record."""
    return jobs.job_from_flow_run(read_job_run(api, processes, job_id))


def get_job_result(backend: Backend, processes: Mapping[str, Any], job_id: str) -> tuple[str, Any]:
    """(media type, output) of a finished job, as the job asked for it.

    A job run with ``response: document`` gets the OGC 1.0 results document
    (a map keyed by output id); otherwise the output as the process made it.
    A caller who is not an admin reads only their own jobs' results.
    """
    canonical = jobs.normalise_job_id(job_id)
    if canonical is None:
        raise JobNotFound(f"No job with id {job_id!r}")
    if current_exchange().caller is not None:
        # Identities are on: the run says whose the job is (JobNotFound: not
        # the caller's), and so where its results are.
        run = read_job_run(backend.api, processes, canonical)
        key = ResultStore.key(canonical, owner_of(run.get("tags") or []))
        manifest, outputs = backend.store.read(key)  # ResultNotFound: a 404
    else:
        try:
            manifest, outputs = backend.store.read(canonical)
        except ResultNotFound:
            # A job made while identities were on keeps its results in its owner's space.
            owner = owner_of(read_job_run(backend.api, processes, canonical).get("tags") or [])
            if owner is None:
                raise
            manifest, outputs = backend.store.read(ResultStore.key(canonical, owner))
    if manifest.response == RequestedResponse.document.value:
        return "application/json", results_document(outputs, manifest.mimetype, manifest.output_ids)
    return manifest.mimetype, outputs


def _finished_job(backend: Backend, processes: Mapping[str, Any], job_id: str) -> tuple[str, str]:
    # (job id, store key) of a succeeded job the caller may see.
    run = read_job_run(backend.api, processes, job_id)  # JobNotFound: a 404
    job = jobs.job_from_flow_run(run)
    status = job["status"]
    if status in (JobStatus.accepted.value, JobStatus.running.value):
        raise ResultNotReady(f"Job {job_id} is {status}: its results are not ready")
    if status != JobStatus.successful.value:
        raise InvalidParameter(f"Job {job_id} is {status}, it has no results: {job['message']}")
    identifier = str(job["identifier"])
    return identifier, ResultStore.key(identifier, owner_of(run.get("tags") or []))


def results_answer(
    backend: Backend,
    processes: Mapping[str, Any],
    job_id: str,
    jobs_url: str | None,
    settings: ResultStoreConfig,
) -> Answer | None:
    """A finished job's results as it asked for them (:mod:`~pygeoapi_prefect.jobs.answers`).

    ``None`` when pygeoapi answers itself: a job that has not succeeded (its
    own error documents), or a raw JSON output.
    """
    try:
        job_id, key = _finished_job(backend, processes, job_id)
    except PrefectManagerError:
        return None
    manifest = backend.store.read_manifest(key)
    links = Links(backend.store, key, job_id, jobs_url, settings.presign_seconds)
    as_map = settings.raw_several == "json"
    return answers.results_answer(backend.store, key, manifest, links, as_map=as_map)


def stored_manifest(
    backend: Backend, processes: Mapping[str, Any], job_id: str
) -> tuple[Manifest, str]:
    """(manifest, store key) of a finished job's outputs (the key has its owner's space)."""
    _, key = _finished_job(backend, processes, job_id)
    return backend.store.read_manifest(key), key


def output_answer(
    backend: Backend, processes: Mapping[str, Any], job_id: str, output_id: str
) -> Answer:
    """One output of a finished job, streamed with its media type.

    Raises:
        JobNotFound: no such job. ResultNotReady: not finished.
        NoSuchOutput: the job has no such output. InvalidParameter: it failed.
    """
    _, key = _finished_job(backend, processes, job_id)
    manifest = backend.store.read_manifest(key)
    return answers.output_answer(backend.store, key, manifest, output_id)
