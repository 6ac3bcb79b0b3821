"""Work off the request path, with a bound on how much of it may wait.

After a job ends, its flow run is named, its summary artifact written and
its log lines sent, each a Prefect write done off the request path. Every
write of a process shares ``api_write_concurrency`` slots (one by default),
and the jobs' own writes go first (the UI's extras last of all); so under
sustained sync load these writes fall behind, and without a bound their queue (each entry a closure
holding what it writes) grew with every job: the server's memory grew about
26 KB per sync job while the load lasted (benchmarks/README.md, issue 15).

A :class:`Backlog` lets at most ``limit`` calls wait or run at once
(``server.manager.background_backlog``). Past it, :meth:`Backlog.offer`
refuses the call: run names and summaries are then skipped (they are
extras of the Prefect UI), a sync job's log lines are sent by the request
itself. Each skip is counted (``pygeoapi_prefect_background_skipped_total``)
and logged now and then; what waits is a gauge
(``pygeoapi_prefect_background_pending``).

Example::

    backlog = Backlog(engine.extras().submit, limit=1000)
    if not backlog.offer(lambda: name_run(api, process_id, job_id)):
        ...  # too much waiting already: skipped
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import pygeoapi_prefect.metrics as metrics

logger = logging.getLogger(__name__)

__all__ = ["Backlog"]

#: A refusal is logged the first time and then once in this many.
_LOG_EVERY = 1000


class Backlog:
    """Calls handed to ``submit`` (an executor's), at most ``limit`` unfinished at once.

    Args:
        submit: runs a call in the background (``ThreadPoolExecutor.submit``);
            a :class:`RuntimeError` from it (a stopped pool) reaches the caller.
        limit: the most calls waiting or running at once.

    """

    def __init__(self, submit: Callable[[Callable[[], None]], Any], limit: int) -> None:
        self._submit = submit
        self.limit = limit
        self._lock = threading.Lock()
        #: Calls offered and not finished yet.
        self.pending = 0
        #: The most calls ever pending at once.
        self.peak = 0
        #: Calls refused because ``limit`` were pending.
        self.skipped = 0

    def offer(
        self,
        call: Callable[[], None],
        what: str = "background work",
        *,
        submit: Callable[[Callable[[], None]], Any] | None = None,
    ) -> bool:
        """Run ``call`` in the background; False (not run) if ``limit`` calls are unfinished.

        ``submit``: another executor's, for this call (counted against the same bound).
        """
        with self._lock:
            if self.pending >= self.limit:
                self.skipped += 1
                skipped = self.skipped
            else:
                skipped = 0
                self.pending += 1
                self.peak = max(self.peak, self.pending)
        if skipped:
            metrics.background_skipped()
            if skipped == 1 or skipped % _LOG_EVERY == 0:
                logger.warning(
                    "%s: not queued, %d Prefect writes already wait off the request path "
                    "(server.manager.background_backlog); %d refused so far",
                    what,
                    self.limit,
                    skipped,
                )
            return False
        metrics.background_pending(1)
        try:
            (submit or self._submit)(lambda: self._run(call))
        except BaseException:
            self._finished()
            raise
        return True

    def _run(self, call: Callable[[], None]) -> None:
        try:
            call()
        finally:
            self._finished()

    def _finished(self) -> None:
        with self._lock:
            self.pending -= 1
        metrics.background_pending(-1)
