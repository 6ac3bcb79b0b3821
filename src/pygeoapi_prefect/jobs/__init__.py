"""Jobs as Prefect flow runs: the mapping, queries and listing, the result store.

Imports the base modules and :mod:`pygeoapi_prefect.prefect`.
"""
