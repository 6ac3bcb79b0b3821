"""Recording the steps of accepted jobs through a Prefect outage.

A job already accepted must not be lost to an outage: its steps are retried
for up to :data:`PERSIST_SECONDS`. Only off the request path (the local
pool's threads, the background recorder): a request never waits on this.

A process that stops cuts the retries short (:meth:`Retries.stop_within`,
``server.manager.drain_seconds``): a step still failing then raises, and
what it leaves is taken up by recovery (an async job Pending or Running in
Prefect, whose heartbeat and lease lapse) or is lost and logged (the record
of a sync job never written).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

from pygeoapi_prefect.errors import PrefectUnavailable

logger = logging.getLogger(__name__)

__all__ = ["PERSIST_SECONDS", "Retries", "persist"]

#: Pauses between attempts to record a job step in Prefect (the last repeats).
_PERSIST_DELAYS = (0.5, 1.0, 2.0, 4.0, 5.0)
#: How long a job step is retried while Prefect is out of reach.
PERSIST_SECONDS = 600.0


class Retries:
    """The retries of one engine's job steps, until its process stops."""

    def __init__(self) -> None:
        #: When retries end (monotonic); infinite until the process stops.
        self.stop_by = math.inf

    def stop_within(self, seconds: float) -> None:
        """End every retry at most ``seconds`` from now (safe in a signal handler)."""
        deadline = time.monotonic() + seconds
        if deadline < self.stop_by:
            self.stop_by = deadline

    def persist(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call a Prefect API method, retrying while Prefect is out of reach.

        Raises:
            PrefectUnavailable: still unreachable after :data:`PERSIST_SECONDS`,
                or when the process stops.

        """
        deadline = time.monotonic() + PERSIST_SECONDS
        attempt = 0
        while True:
            try:
                return call(*args, **kwargs)
            except PrefectUnavailable as exc:
                now = time.monotonic()
                if now >= self.stop_by:
                    raise PrefectUnavailable(
                        f"{exc}; not retried: this process is stopping "
                        "(server.manager.drain_seconds)"
                    ) from exc
                if now > deadline:
                    raise
                delay = _PERSIST_DELAYS[min(attempt, len(_PERSIST_DELAYS) - 1)]
                attempt += 1
                logger.warning("Prefect unreachable; retrying in %.1f s", delay)
                # Rechecked each second: the process may start stopping meanwhile.
                end = now + delay
                while (left := min(end, self.stop_by) - time.monotonic()) > 0:
                    time.sleep(min(left, 1.0))


#: For a job process on its own (its server gone): retried for the whole bound.
persist = Retries().persist
