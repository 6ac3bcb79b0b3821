"""Who holds a queued job, whether the holder lives, and the claim that starts a job once.

Three facts, all kept in Prefect so that every pygeoapi process sees them:

- **Holder.** Each engine (one per OS process and config) has a random
  *holder id*; the async jobs it accepts carry it as the flow run label
  ``pygeoapi.holder``, and it keeps them queued in its own memory.
- **Lease.** The engine renews a Prefect variable ``pygeoapi_lease_<holder>``
  every quarter of ``recovery.lease_seconds``. A holder whose lease is
  missing, or older (by the Prefect server's own clock, read off the
  newest lease) than ``lease_seconds``, is dead: its queued jobs are taken
  over by a live process (:mod:`pygeoapi_prefect.execution.recovery`).
- **Claim.** Right before a job's processor starts, its engine creates the
  job's one *claim*: a task run of the job's flow run with the fixed key
  ``pygeoapi.claim``/``0`` and an id derived from the holder. Prefect keeps
  task runs unique per (flow run, task key, dynamic key) in its database
  and answers a second create with the first one, so of any number of
  processes only one ever wins, and a job, once claimed, can never be
  claimed again: its processor starts at most once. (Prefect's state rules
  cannot do this: a Running proposal is compared only with the current
  state, so a Completed or Failed run accepts Running again.)
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pygeoapi_prefect.errors import PrefectManagerError
from pygeoapi_prefect.prefect.api import PrefectAPI

logger = logging.getLogger(__name__)

__all__ = ["CLAIM_TASK_KEY", "HOLDER_LABEL", "Claim", "Leases", "claim", "new_holder_id"]

#: The flow run label naming the process that holds a queued job.
HOLDER_LABEL = "pygeoapi.holder"
CLAIM_TASK_KEY = "pygeoapi.claim"
_CLAIM_TAG_PREFIX = "pygeoapi.holder:"
_LEASE_PREFIX = "pygeoapi_lease_"
_NAMESPACE = uuid.UUID("3d6f1f0e-2b7a-4c59-8f1e-6a0b9c4d2e17")


def new_holder_id() -> str:
    """A fresh holder id (lowercase hex, as Prefect variable names want)."""
    return uuid.uuid4().hex[:20]


@dataclass(frozen=True)
class Claim:
    """The answer to a claim: who holds the job's one start."""

    won: bool
    holder: str | None


def claim(api: PrefectAPI, job_id: str, holder: str, *, name: str) -> Claim:
    """Claim the start of a job for ``holder``; True for exactly one holder, ever.

    Claiming again as the same holder wins again (the id is derived from
    both), so a retried request after a lost answer is harmless.
    """
    mine = str(uuid.uuid5(_NAMESPACE, f"{holder}/{job_id}"))
    body = {
        "id": mine,
        "flow_run_id": job_id,
        "task_key": CLAIM_TASK_KEY,
        "dynamic_key": "0",
        "name": name,
        "tags": ["pygeoapi", f"{_CLAIM_TAG_PREFIX}{holder}"],
        "state": {"type": "COMPLETED", "name": "Claimed", "message": f"Started by {name}"},
    }
    found: dict[str, Any] = api.request("POST", "/task_runs/", json=body).json()
    if str(found.get("id")) == mine:
        return Claim(True, holder)
    owner = next(
        (
            t[len(_CLAIM_TAG_PREFIX) :]
            for t in found.get("tags") or []
            if t.startswith(_CLAIM_TAG_PREFIX)
        ),
        None,
    )
    return Claim(False, owner)


class Leases:
    """This process's lease, and everyone's.

    Args:
        api: the Prefect API.
        holder: this engine's holder id.
        lease_seconds: a lease older than this is a dead holder's.

    """

    def __init__(self, api: PrefectAPI, holder: str, lease_seconds: float) -> None:
        self.api = api
        self.holder = holder
        self.lease_seconds = lease_seconds
        self._name = f"{_LEASE_PREFIX}{holder}"
        self._value = {"host": socket.gethostname(), "pid": os.getpid()}

    def renew(self) -> None:
        """Renew this process's lease (create it if it is gone)."""
        response = self.api.request(
            "PATCH", f"/variables/name/{self._name}", json={"value": self._value}, allow_404=True
        )
        if response.status_code == 404:
            self.api.request(
                "POST",
                "/variables/",
                json={"name": self._name, "value": self._value, "tags": ["pygeoapi"]},
            )

    def release(self) -> None:
        """Drop this process's lease: its queued jobs are free to take at once."""
        try:
            self.api.request("DELETE", f"/variables/name/{self._name}", allow_404=True)
        except PrefectManagerError as exc:
            logger.warning("lease %s not released (it expires by itself): %s", self._name, exc)

    def live_holders(self) -> tuple[set[str], list[str]]:
        """(holders whose lease is fresh, names of long-dead leases to delete).

        Freshness is judged by the Prefect server's clock: the newest lease
        (ours, renewed just before) stands for "now", so clocks of other
        hosts do not matter.
        """
        leases: list[dict[str, Any]] = []
        offset = 0
        while True:
            page = self.api.request(
                "POST",
                "/variables/filter",
                json={
                    "variables": {"name": {"like_": f"{_LEASE_PREFIX}%"}},
                    "limit": 200,
                    "offset": offset,
                },
            ).json()
            leases += page
            if len(page) < 200:
                break
            offset += 200
        if not leases:
            return set(), []
        stamps = {lease["name"]: datetime.fromisoformat(lease["updated"]) for lease in leases}
        now = max(stamps.values())
        live = {
            name[len(_LEASE_PREFIX) :]
            for name, stamp in stamps.items()
            if (now - stamp).total_seconds() <= self.lease_seconds
        }
        stale = [
            name
            for name, stamp in stamps.items()
            if (now - stamp).total_seconds() > 10 * self.lease_seconds
        ]
        return live, stale

    def forget(self, names: list[str]) -> None:
        """Delete long-dead leases (nothing of theirs is queued any more)."""
        for name in names:
            self.api.request("DELETE", f"/variables/name/{name}", allow_404=True)
