"""``pygeoapi_prefect.flask_app:APP``: pygeoapi's Flask app with this package's fixes.

Serve it (gunicorn, ``pygeoapi-prefect serve``) instead of ``pygeoapi.flask_app:APP``;
the app lives in :mod:`pygeoapi_prefect.web.flask`.
"""

from pygeoapi_prefect.web.flask import APP

__all__ = ["APP"]
