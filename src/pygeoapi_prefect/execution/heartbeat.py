"""Job heartbeats, and the Prefect automation that fails runs whose heartbeats stop.

A process that runs a job (a local runner worker, a deployed flow on a Prefect
worker) sends a heartbeat event for the job's flow run every
``heartbeat.interval`` seconds while the job runs. If that process dies
(SIGKILL, OOM, lost machine), the heartbeats stop; the automation installed by
:func:`ensure_zombie_automation` then moves the run to Crashed (a ``failed``
job with a message) once ``heartbeat.zombie_timeout`` seconds passed without
one. This is the mechanism of Prefect's "detect zombie flows" guide, with the
trigger narrowed to flow runs tagged ``pygeoapi`` and started by our own
event, ``pygeoapi.job.heartbeat``: Prefect's flow engine sends
``prefect.flow-run.heartbeat`` every 180 s by default, and a trigger started
by those would crash healthy runs of workers left at that default. Prefect's
heartbeats still count as signs of life for a watched run.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from pygeoapi_prefect.errors import PrefectManagerError
from pygeoapi_prefect.jobs.runs import JOB_TAG
from pygeoapi_prefect.prefect.api import PrefectAPI, borrowed

logger = logging.getLogger(__name__)

__all__ = [
    "AUTOMATION_NAME",
    "HEARTBEAT_ENV",
    "HEARTBEAT_EVENT",
    "PREFECT_HEARTBEAT_EVENT",
    "beating",
    "ensure_zombie_automation",
    "heartbeat_event",
    "zombie_automation",
]

#: Our heartbeat: the event the automation starts watching a run on.
HEARTBEAT_EVENT = "pygeoapi.job.heartbeat"
#: Prefect's own (sent by the flow engine every PREFECT_FLOWS_HEARTBEAT_FREQUENCY
#: s, 180 by default): it keeps a watched run alive, but starts no watch.
PREFECT_HEARTBEAT_EVENT = "prefect.flow-run.heartbeat"
AUTOMATION_NAME = "pygeoapi-prefect: fail jobs whose heartbeats stopped"
#: Seconds between the heartbeats of our deployed flows on a Prefect worker
#: (set in the worker's environment; Prefect's own are 30 s at the least).
HEARTBEAT_ENV = "PYGEOAPI_PREFECT_HEARTBEAT_SECONDS"
#: The first heartbeat of a job comes after this many seconds at most, so
#: that the many jobs shorter than that cost no event at all.
FIRST_BEAT_SECONDS = 1.0
_TERMINAL_EVENTS = [
    f"prefect.flow-run.{state}" for state in ("Completed", "Failed", "Cancelled", "Crashed")
]


def heartbeat_event(flow_run_id: str) -> dict[str, Any]:
    """A heartbeat event (:data:`HEARTBEAT_EVENT`) for a job's flow run."""
    return {
        "id": str(uuid.uuid4()),
        "occurred": datetime.now(UTC).isoformat(),
        "event": HEARTBEAT_EVENT,
        "resource": {"prefect.resource.id": f"prefect.flow-run.{flow_run_id}"},
        "related": [
            {"prefect.resource.id": f"prefect.tag.{JOB_TAG}", "prefect.resource.role": "tag"}
        ],
    }


def _beat(api: PrefectAPI, flow_run_id: str, budget: float) -> None:
    try:
        api.request("POST", "/events", json=[heartbeat_event(flow_run_id)], budget=budget)
    except PrefectManagerError as exc:
        # A missed beat is made good by the next; only a long silence counts.
        logger.warning("heartbeat of job %s not sent: %s", flow_run_id, exc)


@contextmanager
def beating(
    api: PrefectAPI | str | None,
    flow_run_id: str,
    interval: float | None,
    *,
    first: float = FIRST_BEAT_SECONDS,
) -> Iterator[None]:
    """Send heartbeats for ``flow_run_id`` from a thread while the block runs.

    ``api``: the client of the job's process (shared with its progress and
    log shipping), or the API URL (a client of its own, closed at the end).
    Nothing is sent when ``api`` or ``interval`` is missing. The thread
    dies with the process, which is the point: a killed process stops beating.
    The first beat comes after ``first`` seconds (at most ``interval``).
    """
    if not api or not interval:
        yield
        return
    budget = min(5.0, interval)
    with borrowed(api, timeout=budget) as client:
        stop = threading.Event()

        def loop() -> None:
            wait = min(first, interval)
            while not stop.wait(wait):
                _beat(client, flow_run_id, budget)
                wait = interval

        thread = threading.Thread(target=loop, name=f"heartbeat-{flow_run_id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(1.0)


#: Heartbeat interval of deployed processes when the worker sets none.
DEFAULT_INTERVAL = 30.0


def env_interval() -> float | None:
    """The heartbeat interval of a Prefect worker's runs (``HEARTBEAT_ENV``, else 30 s; 0: none)."""
    value = os.environ.get(HEARTBEAT_ENV)
    if not value:
        return DEFAULT_INTERVAL
    try:
        seconds = float(value)
    except ValueError:
        logger.warning("%s=%r is not a number of seconds; using %g", HEARTBEAT_ENV, value, 30)
        return DEFAULT_INTERVAL
    return seconds if seconds > 0 else None


def zombie_automation(zombie_timeout: float) -> dict[str, Any]:
    """The automation that crashes a job's run ``zombie_timeout`` s after its last heartbeat."""
    return {
        "name": AUTOMATION_NAME,
        "description": (
            "Installed by pygeoapi-prefect: a pygeoapi job whose process stopped sending "
            "heartbeats is marked Crashed (failed) instead of staying running forever."
        ),
        "enabled": True,
        "trigger": {
            "type": "event",
            "posture": "Proactive",
            "match": {"prefect.resource.id": "prefect.flow-run.*"},
            "match_related": {
                "prefect.resource.role": "tag",
                "prefect.resource.id": f"prefect.tag.{JOB_TAG}",
            },
            "after": [HEARTBEAT_EVENT],
            "expect": [HEARTBEAT_EVENT, PREFECT_HEARTBEAT_EVENT, *_TERMINAL_EVENTS],
            "for_each": ["prefect.resource.id"],
            "threshold": 1,
            "within": zombie_timeout,
        },
        "actions": [
            {
                "type": "change-flow-run-state",
                "state": "CRASHED",
                "name": "Crashed",
                "message": (
                    f"The job's process stopped sending heartbeats for {zombie_timeout:g} s "
                    "(killed, or its machine was lost); submit the job again"
                ),
            }
        ],
    }


def _same(found: dict[str, Any], wanted: dict[str, Any]) -> bool:
    trigger = found.get("trigger") or {}
    action = (found.get("actions") or [{}])[0]
    return (
        bool(found.get("enabled"))
        and float(trigger.get("within") or 0) == float(wanted["trigger"]["within"])
        and sorted(trigger.get("expect") or []) == sorted(wanted["trigger"]["expect"])
        and trigger.get("match_related") == wanted["trigger"]["match_related"]
        and action.get("message") == wanted["actions"][0]["message"]
    )


def ensure_zombie_automation(api: PrefectAPI, zombie_timeout: float) -> str:
    """Create or update (by name) the zombie automation; returns its id.

    Idempotent: several pygeoapi instances may call it at start. The
    automation is one per Prefect server: the last instance to start with a
    different ``zombie_timeout`` sets it.
    """
    wanted = zombie_automation(zombie_timeout)
    found: list[dict[str, Any]] = api.request(
        "POST", "/automations/filter", json={"limit": 200}
    ).json()
    ours = [a for a in found if a.get("name") == AUTOMATION_NAME]
    for extra in ours[1:]:  # two instances created it at once: keep one
        api.request("DELETE", f"/automations/{extra['id']}", allow_404=True)
    if ours:
        if not _same(ours[0], wanted):
            api.request("PUT", f"/automations/{ours[0]['id']}", json=wanted)
            logger.info("updated the Prefect automation %r", AUTOMATION_NAME)
        return str(ours[0]["id"])
    created: dict[str, Any] = api.request("POST", "/automations/", json=wanted).json()
    logger.info("created the Prefect automation %r", AUTOMATION_NAME)
    return str(created["id"])
