"""Recording the steps of accepted jobs through a Prefect outage.

A job already accepted must not be lost to an outage: its steps are retried
for up to :data:`PERSIST_SECONDS`. Only off the request path (the local
pool's threads, the background recorder): a request never waits on this.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from pygeoapi_prefect.errors import PrefectUnavailable

logger = logging.getLogger(__name__)

__all__ = ["PERSIST_SECONDS", "persist"]

#: Pauses between attempts to record a job step in Prefect (the last repeats).
_PERSIST_DELAYS = (0.5, 1.0, 2.0, 4.0, 5.0)
#: How long a job step is retried while Prefect is out of reach.
PERSIST_SECONDS = 600.0


def persist(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a Prefect API method, retrying while Prefect is out of reach.

    Raises:
        PrefectUnavailable: still unreachable after :data:`PERSIST_SECONDS`.

    """
    deadline = time.monotonic() + PERSIST_SECONDS
    attempt = 0
    while True:
        try:
            return call(*args, **kwargs)
        except PrefectUnavailable:
            if time.monotonic() > deadline:
                raise
            delay = _PERSIST_DELAYS[min(attempt, len(_PERSIST_DELAYS) - 1)]
            attempt += 1
            logger.warning("Prefect unreachable; retrying in %.1f s", delay)
            time.sleep(delay)
