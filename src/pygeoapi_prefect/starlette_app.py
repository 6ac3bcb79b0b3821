"""``pygeoapi_prefect.starlette_app:APP``: pygeoapi's Starlette app with this package's fixes.

Serve it with uvicorn (``uvicorn --workers 4 pygeoapi_prefect.starlette_app:APP``)
instead of ``pygeoapi.starlette_app:APP``; the app lives in
:mod:`pygeoapi_prefect.web.starlette` (docs/production.md).
"""

from pygeoapi_prefect.web.starlette import APP

__all__ = ["APP"]
