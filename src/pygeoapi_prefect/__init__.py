"""pygeoapi-prefect: run OGC API - Processes jobs as Prefect flow runs.

Enable it in the pygeoapi config with
``server.manager.name: pygeoapi_prefect.manager.PrefectManager``.
"""

from __future__ import annotations

from pygeoapi_prefect.manager import PrefectManager
from pygeoapi_prefect.progress import report_progress

__all__ = ["PrefectManager", "__version__", "report_progress"]

__version__ = "0.1.0"
