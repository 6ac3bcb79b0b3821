"""Django middleware: the process and job routes of pygeoapi's Django project, by the contract.

pygeoapi 0.24's Django views build a new ``API`` object, and so a new process
manager, for every request, and share the job-API faults of its other apps.
This middleware keeps one ``API`` (and one PrefectManager, whose engine
starts when the module is imported) per process, and answers every request
under ``/processes``, ``/jobs`` and ``/conformance`` with
:class:`~pygeoapi_prefect.web.contract.Contract`; pygeoapi's views serve the
other routes. Add it to the settings of pygeoapi's project
(``pygeoapi.django_``), first in ``MIDDLEWARE`` (after
``corsheaders.middleware.CorsMiddleware`` when ``server.cors`` is on); the
lines are in docs/production.md, section "Django".

The ``API`` is built from ``settings.PYGEOAPI_CONFIG`` and
``settings.OPENAPI_DOCUMENT`` (what pygeoapi's settings define), or else from
``PYGEOAPI_CONFIG`` and ``PYGEOAPI_OPENAPI``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from django.conf import settings  # type: ignore[import-untyped]
from django.http import (  # type: ignore[import-untyped]
    HttpRequest,
    HttpResponse,
    StreamingHttpResponse,
)
from pygeoapi.api import API
from pygeoapi.config import get_config
from pygeoapi.openapi import load_openapi_document

from pygeoapi_prefect.execution.engine import autostart
from pygeoapi_prefect.web.contract import Contract, WebRequest, WebResponse, discard

logger = logging.getLogger(__name__)

__all__ = ["CONTRACT", "ContractMiddleware", "api_"]

#: pygeoapi's API object of this process (one, not one per request).
api_ = API(
    getattr(settings, "PYGEOAPI_CONFIG", None) or get_config(),
    getattr(settings, "OPENAPI_DOCUMENT", None) or load_openapi_document(),
)
#: The contract answering the process and job routes.
CONTRACT = Contract(api_)


def _body(request: HttpRequest, limit: int | None, length: int | None) -> bytes:
    if request.method != "POST":
        return b""
    # Django reads only a declared length; a chunked body comes from the
    # server's own stream (gunicorn's, which ends it).
    chunked = length is None and request.META.get("wsgi.input_terminated")
    read = request.META["wsgi.input"].read if chunked else request.read
    if limit is None:
        return bytes(read())
    if length is not None and length > limit:
        discard(read)  # refused on its Content-Length
        return b""
    # One byte past the limit is enough to refuse it.
    body = bytes(read(limit + 1))
    if len(body) > limit:
        discard(read)
    return body


def web_request(request: HttpRequest) -> WebRequest:
    """A Django request, for the contract."""
    query = [(key, value) for key, values in request.GET.lists() for value in values]
    answer = WebRequest(
        method=str(request.method),
        path=request.path_info,
        query=query,
        headers={key.lower(): value for key, value in request.headers.items()},
        raw_path=str(request.META.get("RAW_URI") or request.META.get("REQUEST_URI") or ""),
        client=str(request.META.get("REMOTE_ADDR") or ""),
    )
    answer.body = _body(request, CONTRACT.body_limit(), answer.content_length)
    return answer


def django_response(answer: WebResponse) -> HttpResponse:
    """The contract's answer as a Django response (streamed when it is chunks)."""
    response: Any
    if isinstance(answer.body, Iterator):
        response = StreamingHttpResponse(answer.body, status=answer.status)
    else:
        response = HttpResponse(answer.body, status=answer.status)
    joined: dict[str, str] = {}
    for key, value in answer.headers:
        # Django keeps one value per header: repeated ones (Link) are joined.
        joined[key] = f"{joined[key]}, {value}" if key in joined else value
    for key, value in joined.items():
        response[key] = value
    return response


class ContractMiddleware:
    """Answers the contract's routes; passes every other request to pygeoapi's views."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        """Answer one request."""
        if not CONTRACT.claims(request.path_info):
            return self.get_response(request)
        return django_response(CONTRACT.handle(web_request(request)))


# The engine (pool, recovery, leases) starts in the process that serves.
autostart(api_.manager)
