"""What the web layer and the manager tell each other about one request.

pygeoapi calls the manager with fixed arguments, so the job-list filters go
in, and the job count and a failed sync job's id come out, through one
:class:`RequestExchange` per request. It travels in a context variable whose
value is a mutable object: an ASGI server runs pygeoapi's handlers in a
worker thread with a *copy* of the request's context, so a value set there
would not be seen by the middleware, but a change to the shared object is.

Example::

    exchange = begin_request(query=parse_job_query(args))
    ...  # pygeoapi calls the manager, which reads exchange.query
    exchange.number_matched  # set by the manager's get_jobs
"""

from __future__ import annotations

from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from pygeoapi_prefect.errors import NotAuthenticated
from pygeoapi_prefect.jobs.owners import Caller
from pygeoapi_prefect.jobs.query import JobQuery

__all__ = ["RequestExchange", "begin_request", "current_exchange", "request_caller"]


@dataclass
class RequestExchange:
    """The facts of one request, shared by the web layer and the manager.

    Attributes:
        query: the job-list filters of ``GET /jobs`` (``None``: none given).
        number_matched: how many jobs matched, set by ``get_jobs``.
        failed_job_id: the recorded job of a sync execution that failed.
        unrecorded: a sync job ran but its record waits for Prefect: the
            answer has no job (no ``Location``).
        links: ``Link`` header values of outputs a sync job answers by reference.
        no_content: the sync answer has no body (raw, every output by reference): 204.
        streams: the web layer sends ``body`` itself (ours does; pygeoapi's
            own apps do not, and get the whole answer from the manager).
        body: the chunks of a sync answer read from the result store (a
            ``multipart/related`` answer, or one large output), sent in place
            of the empty answer pygeoapi carries, so none is held whole.
        body_size: the length of ``body``, if known.
        caller: who sent the request, when ``server.manager.auth`` is on (set
            by the web layer once it has authenticated the request).
        subscriber: the execute request's OGC ``subscriber`` (its URIs by
            key), taken out of the body before pygeoapi reads it: pygeoapi
            logs whole execute bodies at DEBUG, and callback URLs carry tokens.
        runs: the job runs this request has read, by id (``listing.read_job_run``):
            pygeoapi looks a job up before our results answer reads it, and one
            request needs one read. A request that changes a run drops it.

    """

    query: JobQuery | None = None
    number_matched: int | None = None
    failed_job_id: str | None = None
    unrecorded: bool = False
    links: list[str] = field(default_factory=list)
    no_content: bool = False
    streams: bool = False
    body: Iterator[bytes] | None = None
    body_size: int | None = None
    caller: Caller | None = None
    subscriber: dict[str, str] | None = None
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)


_EXCHANGE: ContextVar[RequestExchange | None] = ContextVar(
    "pygeoapi_prefect_exchange", default=None
)


def begin_request(query: JobQuery | None = None) -> RequestExchange:
    """Start the exchange of a new request (in the context the handler will run in)."""
    exchange = RequestExchange(query=query)
    _EXCHANGE.set(exchange)
    return exchange


def current_exchange() -> RequestExchange:
    """This request's exchange; a throwaway one outside a request (nothing reads it)."""
    return _EXCHANGE.get() or RequestExchange()


def request_caller(required: bool) -> Caller | None:
    """The caller of the request being served; fails closed when one is ``required``.

    With ``server.manager.auth`` on, a request that reaches the manager
    without a caller did not come through this package's web layer (for
    example pygeoapi's own ``pygeoapi.flask_app``), which is the only one
    that authenticates: it is refused rather than served without isolation.

    Raises:
        NotAuthenticated: ``required`` and no caller was set.

    """
    caller = current_exchange().caller
    if required and caller is None:
        raise NotAuthenticated(
            "server.manager.auth is on, but this request was not authenticated: serve "
            "pygeoapi_prefect.flask_app, pygeoapi_prefect.starlette_app or the Django "
            "middleware (pygeoapi's own apps know nothing of identities)"
        )
    return caller
