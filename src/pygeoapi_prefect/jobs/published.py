"""Prefect deployments tagged for publication, as pygeoapi processes (``publish``)."""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from typing import Any

from pygeoapi_prefect.config import PublishConfig
from pygeoapi_prefect.errors import PrefectManagerError
from pygeoapi_prefect.jobs import runs as jobs
from pygeoapi_prefect.prefect.api import PrefectAPI
from pygeoapi_prefect.processes import describe_deployment

logger = logging.getLogger(__name__)

__all__ = ["PublishedProcesses"]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


class PublishedProcesses:
    """The published deployments, read at most every ``publish.refresh_seconds``.

    One per engine, so every manager of a process shares the cache.
    """

    def __init__(self, config: PublishConfig) -> None:
        self.config = config
        self._published: dict[str, dict[str, Any]] = {}
        self._read_at = -math.inf
        self._lock = threading.Lock()

    def get(self, api: PrefectAPI) -> dict[str, dict[str, Any]]:
        """Process id -> pygeoapi resource of each published deployment ({} when off)."""
        if not self.config.enabled:
            return {}
        if time.monotonic() - self._read_at < self.config.refresh_seconds:
            return self._published
        with self._lock:
            if time.monotonic() - self._read_at < self.config.refresh_seconds:
                return self._published
            try:
                deployments = api.deployments_tagged(self.config.tag)
            except PrefectManagerError as exc:
                # Keep serving what was known, and wait a full period before
                # asking again (not once per request while Prefect is down).
                logger.warning("published deployments not refreshed: %s", exc)
                self._read_at = time.monotonic()
                return self._published
            published: dict[str, dict[str, Any]] = {}
            for deployment in deployments:
                own = jobs.process_id_of(deployment.get("tags") or [])
                process_id = own or _slug(f"{deployment['flow_name']}-{deployment['name']}")
                published[process_id] = {
                    "type": "process",
                    "processor": {
                        "name": "pygeoapi_prefect.processes.DeploymentProcessor",
                        "deployment": f"{deployment['flow_name']}/{deployment['name']}",
                        "metadata": describe_deployment(deployment, process_id),
                        "stores_results": own is not None,
                    },
                }
            self._published, self._read_at = published, time.monotonic()
            return published
