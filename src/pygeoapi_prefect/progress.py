"""Progress reported by a running process, shown in its job's status.

Call :func:`report_progress` from a process (a pygeoapi processor's
``execute`` or a Prefect flow published as a process)::

    from pygeoapi_prefect import report_progress

    report_progress(50, "halfway through the tiles")

The percentage and message are stored on the job's flow run (labels
``pygeoapi.progress`` and ``pygeoapi.message``) and show in ``GET /jobs/{id}``.
It works wherever the job runs: a local worker process, the request of a
sync job, or a Prefect worker. Outside a job it does nothing. Reporting never
fails the job: a progress update that cannot be stored is logged and dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from pygeoapi_prefect.errors import PrefectManagerError

if TYPE_CHECKING:
    from pygeoapi_prefect.prefect.api import PrefectAPI

logger = logging.getLogger(__name__)

__all__ = ["report_progress", "reporting_to"]

Reporter = Callable[[int, "str | None"], None]
_reporter: ContextVar[Reporter | None] = ContextVar("pygeoapi_prefect_reporter", default=None)


@contextmanager
def reporting_to(reporter: Reporter | None) -> Iterator[None]:
    """Send the :func:`report_progress` calls made inside to ``reporter``."""
    token = _reporter.set(reporter)
    try:
        yield
    finally:
        _reporter.reset(token)


#: Seconds a progress step waits at most for its event to be sent (so the
#: job's next step, maybe sent from another process, never overtakes it).
_EVENT_WAIT = 1.0


def labels_reporter(
    api: PrefectAPI | str, job_id: str, *, events: dict[str, Any] | None = None
) -> Reporter:
    """A reporter that stores progress on the job's flow run.

    ``api``: the client of the job's process (shared with its heartbeats and
    log shipping), or the API URL (a client of its own). With ``events``
    (pygeoapi's ``pubsub`` block) each step is also published
    (:mod:`pygeoapi_prefect.events`).
    """
    from pygeoapi_prefect.jobs.runs import MESSAGE_LABEL, PROGRESS_LABEL
    from pygeoapi_prefect.prefect.api import client_of

    client = client_of(api)

    def report(percent: int, message: str | None) -> None:
        labels: dict[str, object] = {PROGRESS_LABEL: percent}
        if message is not None:
            labels[MESSAGE_LABEL] = message
        client.update_labels(job_id, labels)
        if events:
            from pygeoapi_prefect.events import publisher_for

            sent = publisher_for(events, client).publish(
                "progress", job_id, progress=percent, message=message
            )
            if sent is not None:
                sent.wait(_EVENT_WAIT)

    return report


_run_reporters: dict[str, Reporter] = {}


def _prefect_run_reporter() -> Reporter | None:
    # Inside a flow run that a Prefect worker runs (a deployed process): one
    # reporter (one HTTP client) per run, however often it reports.
    from prefect.runtime import flow_run

    from pygeoapi_prefect.prefect.api import prefect_settings_api_url

    run_id, api_url = flow_run.id, prefect_settings_api_url()
    if not run_id or not api_url:
        return None
    reporter = _run_reporters.get(str(run_id))
    if reporter is None:
        reporter = _run_reporters[str(run_id)] = labels_reporter(api_url, str(run_id))
    return reporter


def report_progress(percent: int, message: str | None = None) -> None:
    """Report how far the running job is (0-100), with an optional message."""
    try:
        percent = max(0, min(100, int(percent)))
    except (TypeError, ValueError, OverflowError):
        logger.warning("progress %r is not a percentage: ignored", percent)
        return
    reporter = _reporter.get() or _prefect_run_reporter()
    if reporter is None:
        logger.debug("progress %s%% reported outside a job: ignored", percent)
        return
    try:
        reporter(percent, message)
    except PrefectManagerError as exc:
        logger.warning("progress %s%% could not be stored: %s", percent, exc)
