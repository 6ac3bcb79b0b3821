"""The one builder of the Prefect states this package proposes.

Example::

    api.set_state(job_id, state("FAILED", "The job's process died"))
    api.set_state(job_id, running(job_id))
"""

from __future__ import annotations

import uuid
from typing import Any

__all__ = ["running", "running_transition_id", "state"]

_NAMESPACE = uuid.UUID("8f0c3f5e-6d1f-4a8e-9a53-3c5a1b0e7d21")


#: The end of the state name a job's own process gives the end it records
#: because its server process was gone (the job watcher publishes and counts it).
WITHOUT_SERVER = "WithoutServer"


def state(kind: str, message: str | None = None, *, name: str | None = None) -> dict[str, Any]:
    """A ``StateCreate`` body of type ``kind`` (``"RUNNING"``...), with a message if any.

    ``name``: the state's name in the Prefect UI (default: the type, capitalised).
    """
    body: dict[str, Any] = {"type": kind, "name": name or kind.capitalize()}
    if message:
        body["message"] = message
    return body


def running_transition_id(job_id: str) -> str:
    """The transition id of a job's move to Running: the same in every process.

    Prefect rejects a transition whose id equals that of the run's current
    state, so a second Running proposal for a running job is refused. (What
    makes a job start at most once is the claim,
    :func:`pygeoapi_prefect.execution.leases.claim`; this only keeps a
    duplicate proposal from rewriting the start time.)
    """
    return str(uuid.uuid5(_NAMESPACE, f"{job_id}/running"))


def running(job_id: str) -> dict[str, Any]:
    """The Running state of a local job, with its transition id."""
    body = state("RUNNING", "Job running")
    body["state_details"] = {"transition_id": running_transition_id(job_id)}
    return body
