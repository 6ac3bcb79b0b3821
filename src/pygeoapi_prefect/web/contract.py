"""The HTTP contract of the process and job API, the same on every pygeoapi app.

pygeoapi 0.24 has three web apps (Flask, Starlette, Django), each a thin
layer over ``pygeoapi.api.processes`` with faults of its own: the Starlette
app answers ``DELETE /jobs/{id}`` with a 500 and a manager error with a
traceback, the Django app builds a new ``API`` (and process manager) for
every request, and none of them passes the job-list filters on. So the
routes of OGC API - Processes (``/processes...``, ``/jobs...``,
``/conformance``), and the Prometheus metrics (``/metrics``,
:mod:`pygeoapi_prefect.metrics`), are answered here, on a small framework-neutral
request/response pair, by calling pygeoapi's own API functions and fixing
what they return (:mod:`~pygeoapi_prefect.web.documents`); each app's glue
(:mod:`~pygeoapi_prefect.web.flask`, :mod:`~pygeoapi_prefect.web.starlette`,
:mod:`~pygeoapi_prefect.web.django`) only converts its request into a
:class:`WebRequest` and the :class:`WebResponse` back, and leaves every other
route to pygeoapi.

:meth:`Contract.handle` is synchronous and must run in the thread (and
context) the manager is called in: it starts the request's exchange
(:func:`~pygeoapi_prefect.jobs.exchange.begin_request`) there.

Example::

    contract = Contract(api_)
    if contract.claims(path):
        response = contract.handle(WebRequest("GET", path, query, headers))
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from pygeoapi.api import SYSTEM_LOCALE, APIRequest, apply_gzip, conformance
from pygeoapi.api import processes as processes_api
from pygeoapi.formats import F_HTML, F_JSON
from pygeoapi.util import get_api_rules
from werkzeug.datastructures import ImmutableMultiDict

import pygeoapi_prefect.metrics as metrics
from pygeoapi_prefect.errors import (
    InvalidParameter,
    JobNotFound,
    NotAuthenticated,
    PrefectManagerError,
    RequestTooLarge,
    ResultNotFound,
)
from pygeoapi_prefect.jobs.exchange import RequestExchange, begin_request
from pygeoapi_prefect.jobs.query import parse_job_query
from pygeoapi_prefect.web import documents, guard, job_logs
from pygeoapi_prefect.web.auth import Authenticator
from pygeoapi_prefect.web.html_pages import Answer, process_job_links, render_html

logger = logging.getLogger(__name__)

__all__ = ["DISCARD_BYTES", "Contract", "WebRequest", "WebResponse", "discard"]

#: How much of a refused (too large) body is read and dropped before the 413
#: goes out: a server that closes a connection with unread data makes the
#: client's TCP stack reset it, and the client may never see the answer.
#: Past this, the connection is closed all the same.
DISCARD_BYTES = 16 * 1024 * 1024

_ROOTS = ("processes", "jobs")
#: Headers that describe a body: gone from an answer without one (204).
_BODY_HEADERS = ("content-type", "content-length", "content-encoding")
#: Methods of each route shape (segments after the root, ``*`` any id).
_ROUTES: dict[tuple[str, ...], tuple[str, ...]] = {
    ("conformance",): ("GET",),
    ("processes",): ("GET",),
    ("processes", "*"): ("GET",),
    ("processes", "*", "execution"): ("POST",),
    ("jobs",): ("GET",),
    ("jobs", "*"): ("GET", "DELETE"),
    ("jobs", "*", "results"): ("GET",),
    ("jobs", "*", "logs"): ("GET",),
    ("jobs", "*", "results", "*"): ("GET",),
}


@dataclass
class WebRequest:
    """A request as every app can describe it.

    Attributes:
        method: the HTTP method, upper case.
        path: the decoded path, URL prefix included (``/jobs/<id>``).
        query: the query parameters in order, repeated keys repeated.
        headers: header names in lower case (repeated headers joined by ``,``).
        raw_path: the path as sent, percent-encoded (empty if the server does not say).
        body: the body, as read by the app (at most :meth:`Contract.body_limit` + 1 bytes).
        client: the address of the connection's other end (``server.manager.auth.header``
            believes proxy headers only from trusted ones).

    """

    method: str
    path: str
    query: list[tuple[str, str]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    raw_path: str = ""
    body: bytes = b""
    client: str = ""

    @property
    def content_length(self) -> int | None:
        """The declared body length; ``None`` if none (or not a number)."""
        try:
            return int(self.headers["content-length"])
        except (KeyError, ValueError):
            return None


@dataclass
class WebResponse:
    """An answer every app can send: ``body`` is bytes, or chunks to stream."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes | Iterator[bytes] = b""

    def header(self, name: str) -> str | None:
        """The first value of a header, by case-insensitive name."""
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


def discard(read: Callable[[int], bytes], limit: int = DISCARD_BYTES) -> None:
    """Read and drop the rest of a refused body, at most ``limit`` bytes (:data:`DISCARD_BYTES`)."""
    dropped = 0
    while dropped < limit:
        chunk = read(64 * 1024)
        if not chunk:
            return
        dropped += len(chunk)


class _Shim:
    """The attributes ``APIRequest`` reads from a framework request."""

    def __init__(self, path: str, args: list[tuple[str, str]], headers: dict[str, str]) -> None:
        self.scope = {"path": path}
        self.args = ImmutableMultiDict(args)
        self.headers = headers


class Contract:
    """The process and job routes of one pygeoapi ``API`` object.

    Args:
        api: pygeoapi's ``API`` (its ``manager`` is a PrefectManager, or any
            pygeoapi manager: the fixes that need ours are then skipped).
        url_prefix: the path prefix pygeoapi's routes are under
            (``server.api_rules.url_prefix``); read from the config when ``None``.

    """

    def __init__(self, api: Any, url_prefix: str | None = None) -> None:
        self.api = api
        if url_prefix is None:
            url_prefix = get_api_rules(api.config).get_url_prefix()
        self.prefix = "/" + url_prefix.strip("/") if url_prefix.strip("/") else ""
        if hasattr(api.manager, "jobs_url"):
            # Each new job's flow run records where pygeoapi serves it.
            api.manager.jobs_url = f"{api.base_url}/jobs"
            # Every job's steps go to pygeoapi's pub/sub broker, if it has one.
            api.manager.pubsub = api.config.get("pubsub")
        auth = getattr(getattr(api.manager, "config", None), "auth", None)
        #: Finds each request's caller (``server.manager.auth``); ``None``: no identities.
        self.auth = Authenticator(auth) if auth is not None and auth.enabled else None

    # -- what the apps ask ------------------------------------------------------

    def _parts(self, path: str) -> list[str] | None:
        if self.prefix:
            if not path.startswith(self.prefix + "/"):
                return None
            path = path[len(self.prefix) :]
        if path.endswith("/") and len(path) > 1:
            path = path[:-1]  # pygeoapi's routes take one trailing slash
        return path.split("/")[1:]

    def claims(self, path: str) -> bool:
        """Whether this contract answers ``path`` (the app serves every other)."""
        parts = self._parts(path)
        if not parts:
            return False
        return parts[0] in _ROOTS or parts == ["conformance"] or parts == self._metrics_parts()

    def _metrics_parts(self) -> list[str]:
        config = getattr(getattr(self.api.manager, "config", None), "metrics", None)
        return (config.path if config is not None else "/metrics").split("/")[1:]

    def body_limit(self) -> int | None:
        """The largest request body accepted (``server.manager.limits``); ``None``: no limit."""
        limits = getattr(getattr(self.api.manager, "config", None), "limits", None)
        return None if limits is None else int(limits.max_request_bytes)

    def handle(self, request: WebRequest) -> WebResponse:
        """Answer a request this contract claims; never raises."""
        exchange = begin_request()
        try:
            return self._handle(request, exchange)
        except PrefectManagerError as exc:
            response = self._error(*documents.exception_document(exc))
            if isinstance(exc, NotAuthenticated) and exc.challenge:
                response.headers.append(("WWW-Authenticate", exc.challenge))
            return response
        except Exception:
            logger.exception("unexpected error answering %s %s", request.method, request.path)
            return self._error(
                500,
                documents.error_document(
                    "NoApplicableCode",
                    500,
                    "Internal server error",
                    "The server could not answer this request; its log says why",
                ),
            )

    # -- routing ------------------------------------------------------------------

    def _handle(self, request: WebRequest, exchange: RequestExchange) -> WebResponse:
        parts = self._parts(request.path) or []
        if parts == self._metrics_parts():
            return self._metrics(request)
        shape = tuple(parts[:1]) + (("*",) if len(parts) > 1 else ()) + tuple(parts[2:])
        if shape[:3] == ("jobs", "*", "results") and len(shape) == 4:
            shape = ("jobs", "*", "results", "*")  # one output: /jobs/{jobId}/results/{outputId}
        methods = _ROUTES.get(shape)
        if methods is None or "" in parts or "%2f" in request.raw_path.partition("?")[0].lower():
            # A job or process id with a path separator names nothing
            # (/jobs/%2F would otherwise be decoded into another route).
            return self._error(
                404,
                documents.error_document(
                    "NotFound", 404, "Not Found", "The requested URL was not found on the server"
                ),
            )
        method = "GET" if request.method == "HEAD" else request.method
        if method not in methods:
            response = self._error(
                405,
                documents.error_document(
                    "MethodNotAllowed",
                    405,
                    "Method Not Allowed",
                    f"{request.method} is not allowed here; use {', '.join(methods)}",
                ),
            )
            response.headers.append(("Allow", ", ".join(methods)))
            return response
        if self.auth is not None and (shape[0] == "jobs" or shape[-1] == "execution"):
            # Jobs belong to callers; process descriptions stay public.
            self._identify(request, exchange)
        self._check_body(request, execute=shape[-1] == "execution")
        if shape[-1] == "execution":
            _take_subscriber(request, exchange)
            exchange.streams = True  # a sync answer from the store is sent chunk by chunk
        if shape == ("jobs", "*", "logs"):
            # Its formats (json, txt) are not pygeoapi's: answered before its checks.
            return job_logs.answer(self, request, parts[1])
        api_request = self._api_request(request)
        if not api_request.is_valid():
            return self._answer(self.api.get_format_exception(api_request), parts)
        if shape == ("conformance",):
            return self._answer(conformance(self.api, api_request), parts)
        if shape == ("jobs",):
            # pygeoapi passes only limit and offset to the manager: the
            # job-list filters travel in this request's exchange.
            try:
                exchange.query = parse_job_query(self._query_dict(request))
            except InvalidParameter as exc:
                if api_request.format != F_HTML:
                    raise
                # Asked for HTML: pygeoapi's own exception page.
                headers = api_request.get_response_headers(**self.api.api_headers)
                page = self.api.get_exception(
                    HTTPStatus.BAD_REQUEST, headers, F_HTML, exc.ogc_exception_code, exc.message
                )
                return self._answer(page, parts)
        if api_request.format == F_HTML and method == "GET":
            page = render_html(
                self.api, parts, api_request, self._api_request(request, fmt=F_JSON), self._fix
            )
            if page is not None:
                return self._answer(page, parts)
        if shape[0] == "processes":
            if shape[-1] == "execution":
                answer = processes_api.execute_process(self.api, api_request, parts[1])
                return self._executed(self._answer(answer, parts), exchange)
            process_id = parts[1] if len(parts) == 2 else None
            return self._answer(
                processes_api.describe_processes(self.api, api_request, process_id), parts
            )
        job_id = parts[1] if len(parts) > 1 else None
        if shape[-1] == "results":
            return self._results(request, api_request, parts)
        if shape[2:] == ("results", "*"):
            return self._output(api_request, parts)
        if method == "DELETE":
            answer = processes_api.delete_job(self.api, api_request, job_id)
            return self._answer(answer, parts, dismiss=True)
        return self._answer(processes_api.get_jobs(self.api, api_request, job_id), parts)

    def _metrics(self, request: WebRequest) -> WebResponse:
        config = getattr(getattr(self.api.manager, "config", None), "metrics", None)
        if config is None or not config.enabled:
            return self._error(
                404,
                documents.error_document(
                    "NotFound",
                    404,
                    "Not Found",
                    "Metrics are off on this server (server.manager.metrics.enabled)",
                ),
            )
        if request.method not in ("GET", "HEAD"):
            response = self._error(
                405,
                documents.error_document(
                    "MethodNotAllowed",
                    405,
                    "Method Not Allowed",
                    f"{request.method} is not allowed here; use GET",
                ),
            )
            response.headers.append(("Allow", "GET"))
            return response
        scraped = metrics.scrape(request.headers.get("accept"))
        if scraped is None:
            return self._error(
                503,
                documents.error_document(
                    "NoApplicableCode",
                    503,
                    "Service Unavailable",
                    f"Metrics cannot be recorded in this server process ({metrics.failure()})",
                ),
            )
        content_type, body = scraped
        return WebResponse(
            200, [("Content-Type", content_type), ("Cache-Control", "no-store")], body
        )

    # -- requests -----------------------------------------------------------------

    def _identify(self, request: WebRequest, exchange: RequestExchange) -> None:
        assert self.auth is not None
        caller = self.auth.caller(request.headers, request.client)
        if caller is not None and caller.user is None and self.auth.config.anonymous == "deny":
            raise NotAuthenticated(
                "This server's jobs belong to their users: authenticate first "
                "(server.manager.auth.anonymous is deny)",
                challenge=self.auth.challenge,
            )
        exchange.caller = caller

    def _check_body(self, request: WebRequest, *, execute: bool) -> None:
        limit = self.body_limit()
        if limit is None:
            return
        guard.check_size(request.content_length, limit)
        if len(request.body) > limit:
            # A chunked body has no Content-Length; the app read one byte past the limit.
            raise RequestTooLarge(
                f"The request body is larger than the {limit} bytes this server "
                "accepts (server.manager.limits.max_request_bytes)"
            )
        if execute:
            limits = self.api.manager.config.limits
            guard.check_execute_body(request.body, max_depth=limits.max_json_depth)

    @staticmethod
    def _query_dict(request: WebRequest) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for key, value in request.query:
            found.setdefault(key, []).append(value)
        return found

    def _api_request(self, request: WebRequest, *, fmt: str | None = None) -> APIRequest:
        args = request.query
        if fmt is not None:
            args = [(key, value) for key, value in args if key != "f"] + [("f", fmt)]
        api_request = APIRequest(_Shim(request.path, args, request.headers), self.api.locales)
        api_request._data = request.body
        return api_request

    # -- responses ----------------------------------------------------------------

    def _error(self, status: int, document: dict[str, Any]) -> WebResponse:
        return WebResponse(
            status,
            [("Content-Type", documents.JSON)],
            documents.dumps(document, self.api.pretty_print),
        )

    def _fix(self, document: dict[str, Any]) -> dict[str, Any] | None:
        from pygeoapi_prefect.jobs.exchange import current_exchange

        return documents.fixed_job_document(
            document,
            self.api.base_url,
            getattr(self.api.manager, "flow_run_url", None),
            current_exchange().number_matched,
        )

    def _answer(self, answer: Answer, parts: list[str], *, dismiss: bool = False) -> WebResponse:
        """The answer of a pygeoapi API function, fixed, as a response."""
        headers, status, content = answer
        headers = dict(headers)
        if dismiss and status == 200:
            # pygeoapi's DELETE answer has no headers at all (served as HTML).
            headers.setdefault("Content-Type", documents.JSON)
        media_type = str(headers.get("Content-Type", "")).split(";")[0]
        # A job's outputs (a sync execution's or async results' answer) are
        # the process's, sent as pygeoapi made them: nothing here fixes them,
        # and a raw JSON map stays byte for byte what pygeoapi answers.
        outputs = status < 400 and len(parts) == 3 and parts[2] in ("execution", "results")
        if (
            media_type == documents.JSON
            and not outputs
            and isinstance(content, (str, bytes))
            and content
        ):
            try:
                document = json.loads(content)
            except ValueError:
                document = None
            if document is not None:
                fixed = self._fixed(document, status, parts, dismiss=dismiss)
                content = documents.dumps(fixed, self.api.pretty_print).decode()
        if status != HTTPStatus.NO_CONTENT:
            content = apply_gzip(headers, content)
        body = content.encode("utf-8") if isinstance(content, str) else bytes(content)
        return WebResponse(int(status), list(headers.items()), body)

    def _fixed(self, document: Any, status: int, parts: list[str], *, dismiss: bool) -> Any:
        if status >= 400:
            return documents.fix_exception(
                document, status, job_status=len(parts) == 2 and parts[0] == "jobs"
            )
        if not isinstance(document, dict):
            return document
        if parts == ["conformance"]:
            return documents.add_conformance(document)
        if parts[0] == "processes" and len(parts) <= 2 and self._by_reference():
            documents.offer_reference(document)
        if parts[0] == "processes" and len(parts) == 2:
            return process_job_links(document, self.api.base_url)
        if dismiss:
            return documents.dismissed_document(document)
        if parts[0] == "jobs" and len(parts) <= 2:
            return self._fix(document) or document
        return document

    def _by_reference(self) -> bool:
        # Our manager stores every output and can link to it.
        return hasattr(self.api.manager, "output_answer")

    def _executed(self, response: WebResponse, exchange: RequestExchange) -> WebResponse:
        if exchange.unrecorded:
            # A sync job whose record waits for Prefect: no job to point at yet.
            response.headers = [(k, v) for k, v in response.headers if k.lower() != "location"]
        if response.status == 200 and exchange.no_content:
            # Raw, every output by reference: no body, a Link header each.
            response.status, response.body = 204, b""
            response.headers = [
                (k, v) for k, v in response.headers if k.lower() not in _BODY_HEADERS
            ]
        elif response.status == 200 and exchange.body is not None:
            # Read from the result store as it is sent (multipart/related, a
            # large output): pygeoapi carried an empty body in its place.
            response.body = exchange.body
            response.headers = [
                (k, v)
                for k, v in response.headers
                if k.lower() not in ("content-length", "content-encoding")
            ]
            if exchange.body_size is not None:
                response.headers.append(("Content-Length", str(exchange.body_size)))
        if response.status == 200 or response.status == 204:
            response.headers.extend(("Link", link) for link in exchange.links)
        location = response.header("Location")
        if location and response.status in (200, 201, 204):
            response.headers.extend(documents.monitor_links(location))
        elif response.status >= 400 and exchange.failed_job_id:
            # The failed sync job is recorded: say where (its status and message).
            job_url = f"{self.api.base_url}/jobs/{exchange.failed_job_id}"
            response.headers.append(("Location", job_url))
            response.headers.extend(documents.monitor_links(job_url, results=False))
        return response

    def _results(
        self, request: WebRequest, api_request: APIRequest, parts: list[str]
    ) -> WebResponse:
        job_id = parts[1]
        if api_request.format != F_HTML:
            results_answer = getattr(self.api.manager, "results_answer", None)
            found = results_answer(job_id) if results_answer is not None else None
            if found is not None:
                # Outputs by reference (Link headers, hrefs), one at a time, or
                # large (an image, a file): chunk by chunk from the result
                # store; pygeoapi would load them whole first.
                return self._streamed(api_request, found)
            if api_request.format is None:
                # Accept: */* (or none): the results, not pygeoapi's HTML page.
                api_request = self._api_request(request, fmt=F_JSON)
        missing: ResultNotFound | None = None
        try:
            answer: Answer | None = processes_api.get_job_result(self.api, api_request, job_id)
        except ResultNotFound as exc:
            answer, missing = None, exc
        if answer is None or answer[1] in (HTTPStatus.BAD_REQUEST, HTTPStatus.NOT_FOUND):
            # pygeoapi answers a failed job with a generic 400 "job failed":
            # OGC /req/core/job-results-failed wants the job's own failure.
            try:
                unfinished = self._unfinished(api_request, job_id)
            except JobNotFound:
                if answer is None:
                    raise
                return self._answer(answer, parts)  # pygeoapi's 404, in the format asked for
            if unfinished is not None:
                return self._answer(unfinished, parts)
            if missing is not None:
                raise missing
        assert answer is not None
        return self._answer(answer, parts)

    def _unfinished(self, api_request: APIRequest, job_id: str) -> Answer | None:
        """The results answer of a job that has none: failed, not done, dismissed."""
        job = self.api.manager.get_job(job_id)  # the one job lookup; JobNotFound: 404
        status = job.get("status")
        headers = api_request.get_response_headers(SYSTEM_LOCALE, **self.api.api_headers)
        if status == "failed":
            http_status, code = job.get("failure") or (500, "NoApplicableCode")
            message = job.get("message") or "The job failed"
            answer: Answer = self.api.get_exception(
                HTTPStatus(http_status), headers, api_request.format, code, message
            )
            return answer
        if status in ("accepted", "running"):
            message = f"Job {job_id} is {status}: its results are not ready yet"
        elif status == "dismissed":
            message = f"Job {job_id} was dismissed: it has no results"
        else:
            return None
        answer = self.api.get_exception(
            HTTPStatus.NOT_FOUND, headers, api_request.format, "ResultNotReady", message
        )
        return answer

    def _streamed(self, api_request: APIRequest, answer: Any) -> WebResponse:
        headers = api_request.get_response_headers(SYSTEM_LOCALE, **self.api.api_headers)
        headers.pop("Content-Encoding", None)
        headers.pop("Content-Type", None)
        if answer.mimetype is not None:
            headers["Content-Type"] = answer.mimetype
        if answer.size is not None and answer.status != 204:
            headers["Content-Length"] = str(answer.size)
        listed = list(headers.items()) + [("Link", link) for link in answer.links]
        return WebResponse(answer.status, listed, answer.body)

    def _output(self, api_request: APIRequest, parts: list[str]) -> WebResponse:
        """``GET /jobs/{jobId}/results/{outputId}``: one output, with its own media type."""
        output_answer = getattr(self.api.manager, "output_answer", None)
        if output_answer is None:
            return self._error(
                404,
                documents.error_document(
                    "NotFound", 404, "Not Found", "The requested URL was not found on the server"
                ),
            )
        return self._streamed(api_request, output_answer(parts[1], parts[3]))


def _take_subscriber(request: WebRequest, exchange: RequestExchange) -> None:
    # pygeoapi logs the whole execute body at DEBUG, and callback URLs carry
    # tokens: the subscriber reaches the manager through the exchange instead.
    if b'"subscriber"' not in request.body:
        return
    try:
        document = json.loads(request.body)
    except ValueError:
        return  # pygeoapi answers it (checked by the guard when limits are on)
    if not isinstance(document, dict) or not isinstance(document.get("subscriber"), dict):
        return
    subscriber = document.pop("subscriber")
    exchange.subscriber = {
        key: value for key, value in subscriber.items() if isinstance(value, str) and value
    }
    request.body = json.dumps(document).encode("utf-8")
