"""Talking to Prefect: the REST client, state builders, the automation, the dev server.

Imports only the package's base modules (``errors``, ``config``, ``urls``).
"""
