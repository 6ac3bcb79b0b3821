"""pygeoapi-prefect: run OGC API - Processes jobs as Prefect flow runs.

Enable it in the pygeoapi config with
``server.manager.name: pygeoapi_prefect.manager.PrefectManager``.

The public names load lazily, so that light modules of the package (the warm
worker's client) start without importing pygeoapi and Prefect.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pygeoapi_prefect.manager import PrefectManager
    from pygeoapi_prefect.progress import report_progress

__all__ = ["PrefectManager", "__version__", "report_progress"]

__version__ = "0.10.0"

_LAZY = {
    "PrefectManager": "pygeoapi_prefect.manager",
    "report_progress": "pygeoapi_prefect.progress",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pygeoapi_prefect' has no attribute {name!r}")
