"""pygeoapi's Starlette app, answering the process and job routes by the shared contract.

Serve ``pygeoapi_prefect.starlette_app:APP`` with uvicorn (several workers
are fine) instead of ``pygeoapi.starlette_app:APP``. pygeoapi 0.24's own
Starlette routes for jobs answer a manager error (Prefect unreachable) or an
execute body such as ``[1]`` with a 500 and a traceback, ``DELETE
/jobs/{id}`` with a 500 (``KeyError: 'Content-Type'``), ignore the job-list
filters, and write empty strings for dates. Here an ASGI middleware, the
innermost of pygeoapi's app (so CORS and the like still wrap it), hands every
request under ``/processes``, ``/jobs`` and ``/conformance`` to
:class:`~pygeoapi_prefect.web.contract.Contract`, in a worker thread with a
copy of the request's context (the manager's calls block), and sends its
answer; pygeoapi serves every other route.

The app's lifespan closes the engine when the server shuts down (running
jobs get ``local.shutdown_grace``, waiting writes ``drain_seconds``): uvicorn's
workers import the app inside their signal capture and end by raising the
captured SIGTERM again with the default action, so no ``atexit`` hook of
theirs runs. A server that never runs the lifespan (``uvicorn --lifespan
off``) gets a WARNING at its first job request: its processes would stop
without closing.

Like pygeoapi's app, importing this module reads ``PYGEOAPI_CONFIG`` and
``PYGEOAPI_OPENAPI``.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qsl

import anyio.to_thread
from pygeoapi.starlette_app import APP, api_
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pygeoapi_prefect.execution.engine import autostart, close_all
from pygeoapi_prefect.web.contract import DISCARD_BYTES, Contract, WebRequest, WebResponse

logger = logging.getLogger(__name__)

__all__ = ["APP", "CONTRACT", "ContractMiddleware"]

_DONE = object()
#: Whether the ASGI server ran this app's lifespan (its startup), and whether
#: a request has warned that it did not.
_LIFESPAN = {"started": False, "warned": False}


class ContractMiddleware:
    """ASGI middleware: the contract's routes answered by it, the others passed on.

    Args:
        app: the ASGI app it wraps (pygeoapi's router).
        contract: the contract of pygeoapi's ``API`` object.

    """

    def __init__(self, app: ASGIApp, contract: Contract) -> None:
        self.app = app
        self.contract = contract

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one ASGI request."""
        if scope["type"] != "http" or not self.contract.claims(scope["path"]):
            await self.app(scope, receive, send)
            return
        if not _LIFESPAN["started"] and not _LIFESPAN["warned"]:
            _LIFESPAN["warned"] = True
            logger.warning(
                "the ASGI server did not run the app's lifespan (uvicorn --lifespan off?): "
                "this process will stop without interrupting and recording its running "
                "jobs, handing over its queued ones or draining its Prefect writes; "
                "serve it with the lifespan on (uvicorn's default, --lifespan auto)"
            )
        request = await self._request(scope, receive)
        context = contextvars.copy_context()
        answer = await anyio.to_thread.run_sync(context.run, self.contract.handle, request)
        await _send(answer, send)

    async def _request(self, scope: Scope, receive: Receive) -> WebRequest:
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            key, text = name.decode("latin-1").lower(), value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        request = WebRequest(
            method=scope["method"],
            path=scope["path"],
            query=parse_qsl(
                scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True
            ),
            headers=headers,
            raw_path=(scope.get("raw_path") or b"").decode("latin-1"),
            client=str((scope.get("client") or ("",))[0] or ""),
        )
        if request.method == "POST":
            request.body = await _read_body(
                receive, self.contract.body_limit(), request.content_length
            )
        return request


async def _read_body(receive: Receive, limit: int | None, length: int | None) -> bytes:
    # A refused body is still read (and dropped), up to DISCARD_BYTES, so
    # that the client reads the 413 rather than a reset connection.
    refused = limit is not None and length is not None and length > limit
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break  # the client went away
        chunk = message.get("body", b"")
        size += len(chunk)
        if not refused:
            chunks.append(chunk)
            # One byte past the limit is enough to refuse it.
            refused = limit is not None and size > limit
        if not message.get("more_body", False) or size > (limit or 0) + DISCARD_BYTES:
            break
    return b"".join(chunks)


async def _send(answer: WebResponse, send: Send) -> None:
    headers = [
        (key.lower().encode("latin-1"), value.encode("latin-1", "replace"))
        for key, value in answer.headers
    ]
    body = answer.body
    if isinstance(body, bytes) and answer.header("Content-Length") is None:
        headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    if isinstance(body, bytes):
        await send({"type": "http.response.body", "body": body})
        return
    chunks: Iterator[bytes] = body
    # The store's chunks are read in a thread: reading a file or S3 blocks.
    while (chunk := await anyio.to_thread.run_sync(next, chunks, _DONE)) is not _DONE:
        message: Message = {"type": "http.response.body", "body": chunk, "more_body": True}
        await send(message)
    await send({"type": "http.response.body", "body": b""})


def _closing(previous: Any) -> Any:
    # pygeoapi's lifespan, then the engine's close (it blocks: in a thread).
    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[Any]:
        async with previous(app) as state:
            _LIFESPAN["started"] = True
            try:
                yield state
            finally:
                await anyio.to_thread.run_sync(close_all)

    return lifespan


#: The contract answering this app's process and job routes.
CONTRACT = Contract(api_)
# The innermost middleware: pygeoapi's own (CORS, strict slashes) wrap it.
APP.user_middleware.append(Middleware(ContractMiddleware, contract=CONTRACT))
APP.router.lifespan_context = _closing(APP.router.lifespan_context)

# The engine (pool, recovery, leases) starts in the process that serves.
autostart(api_.manager)
