"""Running jobs: the engine, sync jobs, the local pool, deployments, recovery.

Also heartbeats and callbacks. Imports the base modules,
:mod:`pygeoapi_prefect.prefect` and :mod:`pygeoapi_prefect.jobs`.
"""
