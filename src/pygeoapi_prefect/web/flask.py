"""pygeoapi's Flask app, answering the process and job routes by the shared contract.

Serve ``pygeoapi_prefect.flask_app:APP`` (e.g. with gunicorn) instead of
``pygeoapi.flask_app:APP``; ``pygeoapi-prefect serve`` does. It is pygeoapi's
own app object: a ``before_request`` hook hands every request under
``/processes``, ``/jobs`` and ``/conformance`` to
:class:`~pygeoapi_prefect.web.contract.Contract` (the fixes are listed in
docs/conformance.md and :mod:`pygeoapi_prefect.web.documents`) and returns
its answer; pygeoapi serves every other route as usual, and Flask's
``after_request`` hooks (CORS) still apply.

Like pygeoapi's app, importing this module reads ``PYGEOAPI_CONFIG`` and
``PYGEOAPI_OPENAPI``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from flask import Response, request
from pygeoapi.flask_app import APP, api_

from pygeoapi_prefect.execution.engine import autostart
from pygeoapi_prefect.web.contract import Contract, WebRequest, WebResponse, discard

logger = logging.getLogger(__name__)

__all__ = ["APP", "CONTRACT"]

#: The contract answering this app's process and job routes.
CONTRACT = Contract(api_)


def _body(limit: int | None) -> bytes:
    if request.method != "POST":
        return b""
    if limit is None:
        return request.get_data()
    length = request.content_length
    if length is not None and length > limit:
        discard(request.stream.read)  # refused on its Content-Length
        return b""
    # Also bounds a chunked body, which has no Content-Length: one byte past
    # the limit is enough to refuse it.
    body = request.stream.read(limit + 1)
    if len(body) > limit:
        discard(request.stream.read)
    return body


def web_request() -> WebRequest:
    """The Flask request being served, for the contract."""
    environ = request.environ
    return WebRequest(
        method=request.method,
        path=request.path,
        query=list(request.args.items(multi=True)),
        headers={key.lower(): value for key, value in request.headers.items()},
        raw_path=str(environ.get("RAW_URI") or environ.get("REQUEST_URI") or ""),
        body=_body(CONTRACT.body_limit()),
        client=str(request.remote_addr or ""),
    )


def flask_response(answer: WebResponse) -> Response:
    """The contract's answer as a Flask response (streamed when it is chunks)."""
    streamed = isinstance(answer.body, Iterator)
    return Response(
        answer.body, status=answer.status, headers=answer.headers, direct_passthrough=streamed
    )


@APP.before_request
def _contract() -> Response | None:
    if not CONTRACT.claims(request.path):
        return None
    return flask_response(CONTRACT.handle(web_request()))


# The engine (pool, recovery, leases) starts in the process that serves.
autostart(api_.manager)
