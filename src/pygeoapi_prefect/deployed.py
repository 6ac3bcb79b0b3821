"""The flows that deployed processes run (imported by the generated flow code).

Kept at this path for deployments made by earlier versions; the code lives in
:mod:`pygeoapi_prefect.execution.deployed`.
"""

from pygeoapi_prefect.execution.deployed import job_flow, process_flow

__all__ = ["job_flow", "process_flow"]
