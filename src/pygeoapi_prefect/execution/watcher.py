"""The watcher: the ends of jobs that no pygeoapi process sees, read from Prefect's event feed.

Some job ends happen outside pygeoapi: a run cancelled in the Prefect UI or
CLI (``dismissed``), a run marked Crashed by the zombie automation
(:mod:`pygeoapi_prefect.execution.heartbeat`) or by a Prefect worker
(``failed``), and every end of a deployed job, which only its worker sees.
Prefect emits a ``prefect.flow-run.<state name>`` event for each state
change, with the run's tags as related resources; the watcher reads them
and, for each end,

- publishes the job event if nothing else does: Crashed runs (always; no
  part of pygeoapi sets Crashed) and cancellations other than a dismiss
  through the OGC API (whose states carry :data:`DISMISS_MESSAGE`, and
  which published its own event). Successful and failed ends are published
  where the job ran. The CloudEvent's id is made from Prefect's event id, so
  a consumer can drop a repeat.
- counts it in the metrics if nothing else does: every end of a deployment's
  run, and Crashed local runs (their server process is gone).

An end after Cancelling (the Cancelled that a pool or worker sets once the
job stopped) was handled at Cancelling and is skipped.

**Once per job across processes.** Time is cut into periods of
``watch.interval`` seconds on the Prefect server's clock. Period *p* owns
one window of events, those that occurred in
``[p·interval - settle - interval, p·interval - settle)``: windows never
overlap, and ``settle`` leaves Prefect's event persister time to write
them. A window is read by the one process whose create of the Prefect
variable ``pygeoapi_watch_<scope>_<p>`` succeeded (variable names are
unique, so a second create is refused). The winner of a period also claims,
the same way, the windows since the last one claimed that nobody read
(every server was down), within ``watch.catch_up``. ``<scope>`` hashes the
configured process ids and the broker, so installations sharing one Prefect
server each watch for their own broker. A process that dies while reading a
window leaves the rest of it unread (never read twice).

Bounded work: one variable create per process and period, and for the winner
one filter of the variables and at most ``watch.max_events`` events per
window, over a Prefect client of its own (the jobs' requests never wait
behind it).
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import math
import random
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, urlsplit

import pygeoapi_prefect.metrics as metrics
from pygeoapi_prefect.errors import PrefectManagerError, PrefectRequestFailed
from pygeoapi_prefect.events import safe_settings
from pygeoapi_prefect.execution.dismiss import DISMISS_MESSAGE
from pygeoapi_prefect.jobs import runs as jobs
from pygeoapi_prefect.prefect.api import PrefectAPI
from pygeoapi_prefect.prefect.states import WITHOUT_SERVER

if TYPE_CHECKING:
    from pygeoapi_prefect.execution.engine import Engine

logger = logging.getLogger(__name__)

__all__ = ["End", "Watcher", "end_of", "watch_forever"]

#: The OGC status of each end (Cancelling is one: the client asked to stop).
KIND = {
    "COMPLETED": "successful",
    "FAILED": "failed",
    "CRASHED": "failed",
    "CANCELLING": "dismissed",
    "CANCELLED": "dismissed",
}
_SLOT_PREFIX = "pygeoapi_watch_"
#: Prefect's cap on one page of events.
_PAGE = 50
#: At most this many missed windows are claimed by one pass.
_MAX_WINDOWS = 120
#: Seconds of claimed windows whose variables are kept (the latest one always).
_KEEP_SECONDS = 60.0
#: Seconds between two reads of the Prefect server's clock.
_CLOCK_SECONDS = 300.0
_NAMESPACE = uuid.UUID("5b0e4c1e-8f73-4b55-a6a0-2d1d1c9e6f40")


@dataclass(frozen=True)
class End:
    """One job end read from Prefect's event feed."""

    event_id: str
    job_id: str
    process_id: str
    state_type: str
    initial_type: str | None
    message: str | None
    deployed: bool
    #: The state's name (a local job's own process names the end it records alone).
    name: str = ""

    @property
    def kind(self) -> str:
        """The job event's kind (its OGC status)."""
        return KIND[self.state_type]

    @property
    def seen_before(self) -> bool:
        """Whether it follows a Cancelling (handled then)."""
        return self.initial_type in ("CANCELLING", "CANCELLED")

    @property
    def without_server(self) -> bool:
        """Whether a local job's process recorded it after its server process was gone."""
        return self.name.endswith(WITHOUT_SERVER)

    @property
    def published_elsewhere(self) -> bool:
        """Whether another part of pygeoapi publishes its event."""
        if self.state_type == "CRASHED" or self.without_server:
            return False
        return self.kind != "dismissed" or self.message == DISMISS_MESSAGE

    @property
    def counted_elsewhere(self) -> bool:
        """Whether another part of pygeoapi counts it in the metrics (local jobs)."""
        return not self.deployed and self.state_type != "CRASHED" and not self.without_server


def end_of(event: dict[str, Any]) -> End | None:
    """The job end of a Prefect ``prefect.flow-run.*`` event; None if it is none."""
    resource = event.get("resource") or {}
    resource_id = str(resource.get("prefect.resource.id") or "")
    state_type = resource.get("prefect.state-type")
    if not resource_id.startswith("prefect.flow-run.") or state_type not in KIND:
        return None
    related = event.get("related") or []
    tags = [
        str(r.get("prefect.resource.id") or "").removeprefix("prefect.tag.")
        for r in related
        if r.get("prefect.resource.role") == "tag"
    ]
    process_id = jobs.process_id_of(tags)
    if process_id is None or jobs.JOB_TAG not in tags:
        return None
    initial = ((event.get("payload") or {}).get("initial_state") or {}).get("type")
    return End(
        event_id=str(event.get("id") or ""),
        job_id=resource_id.removeprefix("prefect.flow-run."),
        process_id=process_id,
        state_type=str(state_type),
        initial_type=initial,
        message=resource.get("prefect.state-message") or None,
        deployed=any(r.get("prefect.resource.role") == "deployment" for r in related),
        name=str(resource.get("prefect.state-name") or ""),
    )


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


class Watcher:
    """Reads the windows of Prefect's event feed this process wins (see the module)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.config = engine.config.watch
        # A client of its own: the jobs' writes never queue behind the watcher's.
        self.api = PrefectAPI(engine.api.api_url, timeout=engine.config.api_timeout)
        self._offset = 0.0
        self._clock_read = -math.inf
        #: Job ends this watcher handled, and the latest windows it read (periods).
        self.handled = 0
        self.windows: collections.deque[int] = collections.deque(maxlen=1000)

    def close(self) -> None:
        """Close the watcher's Prefect client."""
        self.api.close()

    def needed(self) -> bool:
        """Whether anything here wants the ends (``watch.enabled``, else pubsub or metrics)."""
        if self.config.enabled is not None:
            return self.config.enabled
        return self.engine.events is not None or metrics.enabled()

    def scope(self) -> str:
        """What tells installations on one Prefect server apart: processes and broker."""
        events = self.engine.events
        broker = safe_settings(events.settings).get("broker") if events else None
        what = json.dumps([sorted(self.engine.config.processes), broker], default=str)
        return hashlib.sha256(what.encode()).hexdigest()[:12]

    def now(self) -> float:
        """The Prefect server's clock (its ``Date`` header), read every few minutes."""
        if time.monotonic() - self._clock_read > _CLOCK_SECONDS:
            date = self.api.request("GET", "/health").headers.get("date")
            if date:
                self._offset = parsedate_to_datetime(date).timestamp() - time.time()
            self._clock_read = time.monotonic()
        return time.time() + self._offset

    def _slot(self, period: int) -> str:
        return f"{_SLOT_PREFIX}{self.scope()}_{period:012d}"

    def _claim(self, period: int) -> bool:
        try:
            self.api.request(
                "POST",
                "/variables/",
                json={
                    "name": self._slot(period),
                    "value": self.engine.holder,
                    "tags": ["pygeoapi"],
                },
            )
        except PrefectRequestFailed as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def _missed(self, period: int) -> list[int]:
        """Claim the unread windows since the last claimed one (within ``catch_up``)."""
        prefix = f"{_SLOT_PREFIX}{self.scope()}_"
        found = self.api.request(
            "POST",
            "/variables/filter",
            json={
                "variables": {"name": {"like_": f"{prefix}%"}},
                "sort": "NAME_DESC",
                "limit": 200,
            },
        ).json()
        suffixes = [str(v["name"])[len(prefix) :] for v in found]
        periods = sorted((int(s) for s in suffixes if s.isdigit()), reverse=True)
        earlier = [p for p in periods if p < period]
        # Windows are only ever claimed above the latest claimed one, so older
        # variables can go; those of the last minute stay for a process whose
        # clock (read to the second) puts it a period behind.
        recent = period - max(3, math.ceil(_KEEP_SECONDS / self.config.interval))
        for old in earlier[1:]:
            if old < recent:
                self.api.request("DELETE", f"/variables/name/{prefix}{old:012d}", allow_404=True)
        if not earlier:
            return []  # a fresh start: no history is replayed
        keep = min(math.ceil(self.config.catch_up / self.config.interval), _MAX_WINDOWS)
        claimed = []
        for missed in range(max(earlier[0] + 1, period - keep), period):
            if self._claim(missed):
                claimed.append(missed)
        return claimed

    def pass_once(self) -> int | None:
        """Read this period's window (and missed ones) if this process wins it.

        Returns how many job ends were handled, None if another process holds
        the period.
        """
        period = int(self.now() // self.config.interval)
        if not self._claim(period):
            return None
        handled = 0
        for window in [*self._missed(period), period]:
            handled += self._read(window)
            self.windows.append(window)
        self.handled += handled
        return handled

    def _read(self, period: int) -> int:
        interval, settle = self.config.interval, self.config.settle
        until = period * interval - settle
        body = {
            "filter": {
                "occurred": {
                    "since": _iso(until - interval),
                    # Both bounds are inclusive in Prefect: the next window starts there.
                    "until": _iso(until - 1e-6),
                },
                "event": {"prefix": ["prefect.flow-run."]},
                "resource": {"labels": {"prefect.state-type": sorted(KIND)}},
                "related": {"id": [f"prefect.tag.{jobs.JOB_TAG}"], "role": ["tag"]},
                "order": "ASC",
            },
            "limit": _PAGE,
        }
        page = self.api.request("POST", "/events/filter", json=body).json()
        seen = handled = 0
        while True:
            for event in page.get("events") or []:
                end = end_of(event)
                if end is not None and self.handle(end):
                    handled += 1
            seen += len(page.get("events") or [])
            link = page.get("next_page")
            if not link:
                return handled
            if seen >= self.config.max_events:
                logger.warning(
                    "job watcher: more than %d events between %s and %s; the rest are "
                    "skipped (server.manager.watch.max_events)",
                    self.config.max_events,
                    _iso(until - interval),
                    _iso(until),
                )
                return handled
            token = parse_qs(urlsplit(link).query).get("page-token", [""])[0]
            page = self.api.request(
                "GET", f"/events/filter/next?page-token={quote(token, safe='')}"
            ).json()

    def handle(self, end: End) -> bool:
        """Publish and count one end, where nothing else does; True if it did anything."""
        if end.seen_before or end.process_id not in self.engine.processes():
            return False
        did = False
        if not end.published_elsewhere and self.engine.events is not None:
            self.engine.events.publish(
                end.kind,
                end.job_id,
                message=end.message,
                event_id=str(uuid.uuid5(_NAMESPACE, end.event_id or end.job_id)),
            )
            did = True
        if not end.counted_elsewhere:
            metrics.job_finished(end.process_id, end.kind)
            did = True
        if did:
            logger.info(
                "job %s of process %s: %s in Prefect (%s)",
                end.job_id,
                end.process_id,
                end.kind,
                end.state_type.capitalize(),
            )
        return did


def watch_forever(engine: Engine, stop: threading.Event) -> None:
    """The engine's watcher thread: try to read a window every ``watch.interval``."""
    watcher = Watcher(engine)
    interval = engine.config.watch.interval
    try:
        # Jittered: the processes of a server do not all try at the same moment.
        while not stop.wait(interval * random.uniform(0.5, 1.0)):
            if not watcher.needed():
                continue
            try:
                watcher.pass_once()
            except PrefectManagerError as exc:
                logger.warning("job watcher: a pass failed (the next one goes on): %s", exc)
            except Exception:  # noqa: BLE001 - the watcher must outlive any one failure
                logger.exception("job watcher: a pass failed")
    finally:
        watcher.close()
