"""Retention: finished jobs past ``server.manager.retention`` lose their results and runs.

A job is pruned when it is finished (its run Completed, Failed, Crashed or
Cancelled: never a queued or running one) and either ended longer ago than
``max_age`` or is not among the ``max_jobs`` newest finished jobs. Its
results are deleted from the result store first, then its flow run (with
its logs) by Prefect's ``POST /flow_runs/bulk_delete``, 50 at a time, with a
filter that again requires a finished state: a run that changed meanwhile
is left alone. A run whose results could not be deleted is kept, and the
next prune tries again. Runs of dismissed jobs (tag ``pygeoapi.dismissed``)
go by ``max_age`` too.

Run by ``pygeoapi-prefect prune`` and, with ``retention.sweep_seconds``, by
a thread of the engine: of all server processes one sweeps per period, the
one whose create of the Prefect variable ``pygeoapi_retention_<period>``
succeeded (variable names are unique in Prefect, so a second create is
refused); the period is counted on the Prefect server's clock, and a sweep
stops at the end of its period, so two never overlap.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from pygeoapi_prefect.config import RetentionConfig
from pygeoapi_prefect.errors import PrefectManagerError, PrefectRequestFailed
from pygeoapi_prefect.jobs import runs as jobs
from pygeoapi_prefect.jobs.owners import owner_of
from pygeoapi_prefect.jobs.results import ResultStore
from pygeoapi_prefect.prefect.api import PrefectAPI

if TYPE_CHECKING:
    from pygeoapi_prefect.execution.engine import Engine

logger = logging.getLogger(__name__)

__all__ = ["FINISHED", "PruneReport", "prune", "sweep_forever"]

#: The run states of finished jobs: the only ones ever pruned.
FINISHED = ["COMPLETED", "FAILED", "CRASHED", "CANCELLED"]
#: Prefect's cap on one bulk delete.
_BULK = 50
_PAGE = 200
_SLOT_PREFIX = "pygeoapi_retention_"


@dataclass
class PruneReport:
    """What a prune did (or, dry, would do)."""

    jobs: int = 0
    failed: int = 0
    dry_run: bool = False
    seconds: float = 0.0
    stopped_early: bool = False

    def summary(self) -> str:
        """One line for people (the CLI's last line, the sweep's log)."""
        verb = "would prune" if self.dry_run else "pruned"
        text = f"{verb} {self.jobs} finished job(s) in {self.seconds:.1f} s"
        if self.failed:
            text += (
                f"; {self.failed} kept (their results could not be deleted; tried again next time)"
            )
        if self.stopped_early:
            text += "; stopped at the end of its sweep period (the next sweep goes on)"
        return text


def _tags(tag: str, process_ids: Iterable[str]) -> dict[str, Any]:
    return {"all_": [tag], "any_": [jobs.PROCESS_TAG_PREFIX + p for p in process_ids]}


class _Pruner:
    def __init__(
        self,
        api: PrefectAPI,
        store: ResultStore,
        process_ids: list[str],
        dry_run: bool,
        progress: Callable[[str], None] | None,
        keep_going: Callable[[], bool],
    ) -> None:
        self.api = api
        self.store = store
        self.process_ids = process_ids
        self.report = PruneReport(dry_run=dry_run)
        self.progress = progress
        self.keep_going = keep_going
        self.seen: set[str] = set()  # dry run: each job counted once
        self._threads = ThreadPoolExecutor(max_workers=8, thread_name_prefix="pygeoapi-prune")

    def close(self) -> None:
        self._threads.shutdown(wait=True)

    def _page(self, flow_runs: dict[str, Any], sort: str, offset: int) -> dict[str, str]:
        """Job id -> its key in the result store (under its owner's space, if any)."""
        runs = self.api.filter_flow_runs(flow_runs, sort=sort, limit=_PAGE, offset=offset)
        return {
            str(run["id"]): ResultStore.key(str(run["id"]), owner_of(run.get("tags") or []))
            for run in runs
        }

    def _delete_results(self, job_id: str, key: str) -> bool:
        try:
            self.store.delete(key)
            return True
        except PrefectManagerError as exc:
            logger.warning("job %s kept: its results could not be deleted: %s", job_id, exc)
            return False

    def _prune(self, keys: dict[str, str]) -> int:
        """Prune these jobs; returns how many stayed (kept on purpose or refused)."""
        ids = list(keys)
        if self.report.dry_run:
            fresh = [i for i in ids if i not in self.seen]
            self.seen.update(fresh)
            self.report.jobs += len(fresh)
            return len(ids)
        results = self._threads.map(self._delete_results, ids, [keys[i] for i in ids])
        cleared = [i for i, ok in zip(ids, results, strict=True) if ok]
        self.report.failed += len(ids) - len(cleared)
        deleted = 0
        for start in range(0, len(cleared), _BULK):
            chunk = cleared[start : start + _BULK]
            answer = self.api.request(
                "POST",
                "/flow_runs/bulk_delete",
                json={
                    "flow_runs": {
                        "id": {"any_": chunk},
                        "state": {"type": {"any_": FINISHED}},
                    },
                    "limit": _BULK,
                },
            ).json()
            deleted += len(answer.get("deleted") or [])
        self.report.jobs += deleted
        return len(ids) - deleted

    def run(self, flow_runs: dict[str, Any], sort: str, offset: int, what: str) -> None:
        """Prune every run of the filter from ``offset`` on, page by page."""
        while self.keep_going():
            ids = self._page(flow_runs, sort, offset)
            if not ids:
                return
            # What stays (dry run: everything) is skipped on the next page.
            offset += self._prune(ids)
            if self.progress is not None:
                verb = "found" if self.report.dry_run else "pruned"
                self.progress(f"{what}: {verb} {self.report.jobs} job(s) so far")
        self.report.stopped_early = True


def prune(
    api: PrefectAPI,
    store: ResultStore,
    process_ids: Iterable[str],
    retention: RetentionConfig,
    *,
    dry_run: bool = False,
    progress: Callable[[str], None] | None = None,
    keep_going: Callable[[], bool] = lambda: True,
    now: datetime | None = None,
) -> PruneReport:
    """Prune the finished jobs of ``process_ids`` past ``retention`` (see the module).

    ``keep_going`` is asked before each page (a sweep stops at its period's end).
    """
    started = time.monotonic()
    processes = sorted(process_ids)
    pruner = _Pruner(api, store, processes, dry_run, progress, keep_going)
    try:
        if processes and retention.max_age is not None:
            cutoff = (now or datetime.now(UTC)) - timedelta(seconds=retention.max_age)
            for tag in (jobs.JOB_TAG, jobs.DISMISSED_TAG):
                flow_runs = {
                    "tags": _tags(tag, processes),
                    "state": {"type": {"any_": FINISHED}},
                    "end_time": {"before_": cutoff.isoformat()},
                }
                pruner.run(flow_runs, "EXPECTED_START_TIME_ASC", 0, f"older than {cutoff:%c}")
        if processes and retention.max_jobs is not None:
            flow_runs = {
                "tags": _tags(jobs.JOB_TAG, processes),
                "state": {"type": {"any_": FINISHED}},
            }
            pruner.run(
                flow_runs,
                "EXPECTED_START_TIME_DESC",
                retention.max_jobs,
                f"beyond the newest {retention.max_jobs}",
            )
    finally:
        pruner.close()
    report = pruner.report
    report.seconds = time.monotonic() - started
    return report


# -- the sweep in the server --------------------------------------------------


def _server_time(api: PrefectAPI) -> datetime:
    """The Prefect server's clock (its ``Date`` header), so hosts' clocks do not matter."""
    response = api.request("GET", "/health")
    date = response.headers.get("date")
    return parsedate_to_datetime(date) if date else datetime.now(UTC)


def _take_period(api: PrefectAPI, period: int, holder: str) -> bool:
    """Whether this process sweeps in ``period``: the one whose create succeeds."""
    try:
        api.request(
            "POST",
            "/variables/",
            json={"name": f"{_SLOT_PREFIX}{period}", "value": holder, "tags": ["pygeoapi"]},
        )
    except PrefectRequestFailed as exc:
        if exc.status == 409:
            return False
        raise
    # Periods before the last are nobody's any more.
    old = api.request(
        "POST",
        "/variables/filter",
        json={"variables": {"name": {"like_": f"{_SLOT_PREFIX}%"}}, "limit": 200},
    ).json()
    for variable in old:
        name = str(variable["name"])
        suffix = name[len(_SLOT_PREFIX) :]
        if suffix.isdigit() and int(suffix) < period - 1:
            api.request("DELETE", f"/variables/name/{name}", allow_404=True)
    return True


def sweep_once(engine: Engine) -> PruneReport | None:
    """Prune now if this process holds the current period; None when another does."""
    retention = engine.config.retention
    seconds = retention.sweep_seconds
    now = _server_time(engine.api)
    period = int(now.timestamp() // seconds)
    if not _take_period(engine.api, period, engine.holder):
        return None
    ends = time.monotonic() + (period + 1) * seconds - now.timestamp()
    report = prune(
        engine.api,
        engine.store,
        list(engine.processes()),
        retention,
        keep_going=lambda: time.monotonic() < ends and not engine.stopping,
        now=now,
    )
    if report.jobs or report.failed:
        logger.info("retention sweep: %s", report.summary())
    return report


def sweep_forever(engine: Engine, stop: threading.Event) -> None:
    """The engine's sweeper thread: try a sweep every ``retention.sweep_seconds``."""
    seconds = engine.config.retention.sweep_seconds
    # Checked at least every minute: the first process to look in a period takes it.
    while not stop.wait(min(seconds, 60.0)):
        try:
            sweep_once(engine)
        except PrefectManagerError as exc:
            logger.warning("retention sweep failed (tried again next period): %s", exc)
        except Exception:  # noqa: BLE001 - the sweeper must outlive any one failure
            logger.exception("retention sweep failed")
