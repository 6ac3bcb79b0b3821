"""What a job's flow run shows in the Prefect UI: its name and a summary artifact.

The name is ``<process id>-<first 8 characters of the job id>`` (the job id is
the flow run id), so a run in the UI matches a job of ``GET /jobs`` at a
glance. Prefect makes the id when it creates the run and takes no id from the
caller, so the name costs one write after the create, off the request path
(for a deployed process the flow's ``flow_run_name`` does it, on the worker).

Prefect's UI shows no labels, so what a person looks for on a run's page (the
job's inputs, status, progress, message and the links back to pygeoapi) is
one markdown artifact, written once when the job ends.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pygeoapi_prefect.errors import PrefectManagerError

if TYPE_CHECKING:
    from pygeoapi_prefect.execution.backlog import Backlog
    from pygeoapi_prefect.prefect.api import PrefectAPI

logger = logging.getLogger(__name__)

__all__ = ["job_summary", "run_name", "write_summary", "name_run"]

#: How much of a job's inputs the summary shows.
_INPUTS_CHARS = 4000


def run_name(process_id: str, job_id: str) -> str:
    """The flow run name of a job: ``<process id>-<first 8 of the job id>``."""
    return f"{process_id}-{str(job_id)[:8]}"


def deployed_run_name() -> str:
    """``flow_run_name`` of the deployed flows: the same name, made on the worker."""
    from prefect.runtime import flow_run

    from pygeoapi_prefect.jobs.runs import process_id_of

    process_id = process_id_of(list(flow_run.tags or [])) or flow_run.flow_name or "job"
    return run_name(str(process_id), str(flow_run.id))


def name_run(api: PrefectAPI, process_id: str, job_id: str) -> None:
    """Name a job's flow run; a failure is logged, never raised (the job goes on)."""
    try:
        api.rename_flow_run(job_id, run_name(process_id, job_id))
    except PrefectManagerError as exc:
        logger.warning("flow run of job %s not renamed: %s", job_id, exc)


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def job_summary(
    *,
    job_id: str,
    process_id: str,
    status: str,
    message: str,
    progress: int | None = None,
    inputs: Any = None,
    jobs_url: str | None = None,
) -> str:
    """The markdown of a job's summary artifact."""
    rows = [
        ("Job", f"`{job_id}`"),
        ("Process", f"`{process_id}`"),
        ("Status", status),
        ("Message", message),
    ]
    if progress is not None:
        rows.append(("Progress", f"{progress} %"))
    lines = [f"# pygeoapi job {process_id}-{job_id[:8]}", "", "| | |", "|---|---|"]
    lines += [f"| {name} | {_cell(value)} |" for name, value in rows]
    if jobs_url:
        job_url = f"{jobs_url}/{job_id}"
        links = [f"[status]({job_url})"]
        if status == "successful":
            links.append(f"[results]({job_url}/results)")
        links.append(f"[logs]({job_url}/logs?f=txt)")
        lines += ["", "In pygeoapi: " + " · ".join(links)]
    if inputs is not None:
        try:
            shown = json.dumps(inputs, indent=2, default=str)
        except (TypeError, ValueError):
            shown = repr(inputs)
        if len(shown) > _INPUTS_CHARS:
            shown = shown[:_INPUTS_CHARS] + f"\n... ({len(shown) - _INPUTS_CHARS} more characters)"
        lines += ["", "## Inputs", "", "```json", shown.replace("```", "'''"), "```"]
    return "\n".join(lines) + "\n"


def write_summary(api: PrefectAPI, job_id: str, markdown: str) -> None:
    """Attach the summary to the job's flow run; a failure is logged, never raised."""
    try:
        api.create_artifact(
            {
                "type": "markdown",
                "data": markdown,
                "description": "The pygeoapi job of this flow run",
                "flow_run_id": job_id,
            },
            extra=True,
        )
    except PrefectManagerError as exc:
        logger.warning("summary of job %s not written: %s", job_id, exc)


def in_background(backlog: Backlog, *steps: Callable[[], None]) -> None:
    """Run the steps one after the other off the request path (skipped if ``backlog`` is full)."""

    def run() -> None:
        for step in steps:
            try:
                step()
            except Exception:  # noqa: BLE001 - the UI's extras never fail a job
                logger.exception("Prefect UI step failed")

    try:
        backlog.offer(run, "a run name or summary for the Prefect UI (skipped)")
    except RuntimeError:
        # The engine is stopping (its background pool is shut down): the run's
        # name and summary are extras, never worth failing the job over.
        logger.info("Prefect UI steps skipped: the server is stopping")
