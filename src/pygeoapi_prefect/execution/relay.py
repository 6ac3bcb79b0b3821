"""A local job's reports reach Prefect through its server, over the job's pipe.

A job process reports to Prefect while it runs: heartbeats, progress
labels, its log lines. Sending them itself costs each job process an HTTP
client and the first run of the whole transport (httpx, httpcore, h11):
~3.7 MiB of pages copied from its template, most of what a job costs
(benchmarks/job_memory.py). Its server process has a client already, and
the pool thread that drives the job reads its pipe anyway. So a job
process's client (:class:`RelayedAPI`) hands those writes to the pipe, and
the pool thread sends them (:func:`serve`), in the order the job made them,
before it records the job's end.

If the server has gone (its pipe is closed: the worker was killed while
the job ran), the job process sends them itself from then on, as it
records its own end: a killed server stops relaying, never the job's
heartbeats. Reads (the events publisher's) are never relayed.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from typing import Any

import httpx

from pygeoapi_prefect.errors import PrefectManagerError
from pygeoapi_prefect.prefect.api import PrefectAPI

logger = logging.getLogger(__name__)

__all__ = ["RELAY", "RelayedAPI", "is_relayed", "pipe_sender", "serve"]

#: The first item of a relayed write on a job's pipe.
RELAY = "relay"
#: The writes a job process makes while it runs: heartbeats, progress, logs.
_RELAYED = re.compile(r"(POST /events|PATCH /flow_runs/[^/]+/labels|POST /logs/)")


class RelayedAPI(PrefectAPI):
    """A job process's Prefect client: its running reports go through its server.

    Until :meth:`relay_through` is given the job's pipe it is a plain
    :class:`PrefectAPI`; so it is once the pipe is closed.
    """

    def __init__(self, api_url: str, **options: Any) -> None:
        super().__init__(api_url, **options)
        self._relay: Callable[[tuple[Any, ...]], bool] | None = None

    def relay_through(self, send: Callable[[tuple[Any, ...]], bool]) -> None:
        """Hand the relayed writes to ``send`` (False once the server cannot take them)."""
        self._relay = send

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        allow_404: bool = False,
        budget: float | None = None,
        extra: bool = False,
    ) -> httpx.Response:
        """Relay a running report to the server; send anything else (and all, once alone)."""
        relay = self._relay
        if relay is not None and _RELAYED.fullmatch(f"{method} {path}"):
            if relay((RELAY, method, path, json, budget)):
                # Taken: the server sends it, and logs it if Prefect refuses.
                return httpx.Response(202)
            self._relay = None
            logger.info("the pygeoapi process of this job has gone: it reports to Prefect itself")
        return super().request(
            method, path, json=json, allow_404=allow_404, budget=budget, extra=extra
        )


def pipe_sender(conn: Any) -> Callable[[Any], bool]:
    """A thread-safe ``send`` on a job's pipe: False once it is closed."""
    lock = threading.Lock()

    def send(message: Any) -> bool:
        with lock:
            try:
                conn.send(message)
            except (OSError, ValueError):  # closed: the server has gone
                return False
        return True

    return send


def is_relayed(message: object) -> bool:
    """Whether a message from a job's pipe is a relayed write (else: its outcome)."""
    return isinstance(message, tuple) and len(message) == 5 and message[0] == RELAY


def serve(api: PrefectAPI, job_id: str, message: tuple[Any, ...]) -> None:
    """Send a relayed write of job ``job_id``; a refusal is logged, as the job would have."""
    _, method, path, json, budget = message
    try:
        api.request(method, path, json=json, budget=budget)
    except PrefectManagerError as exc:
        logger.warning("report of job %s not sent (%s %s): %s", job_id, method, path, exc)
    except Exception:  # noqa: BLE001 - a report lost must never fail the job
        logger.exception("report of job %s not sent (%s %s)", job_id, method, path)
