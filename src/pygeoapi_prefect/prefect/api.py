"""A small, fast client for the parts of the Prefect REST API that jobs need.

Why not :class:`prefect.client.orchestration.SyncPrefectClient`: its requests
retry with exponential back-off for up to a minute when the server is down,
and a pygeoapi request must fail with a 503 within seconds instead. Every
response here stays a plain ``dict`` (no model validation on the hot path).
Connection settings (URL, API key, basic-auth string, TLS) come from
Prefect's own settings, so Prefect's documented environment variables work.
"""

from __future__ import annotations

import collections
import logging
import os
import random
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx

import pygeoapi_prefect.metrics as metrics
from pygeoapi_prefect.errors import PrefectAuthFailed, PrefectRequestFailed, PrefectUnavailable
from pygeoapi_prefect.prefect.api_settings import ApiSettings, api_settings
from pygeoapi_prefect.urls import without_credentials

logger = logging.getLogger(__name__)

__all__ = [
    "ClientOptions",
    "PrefectAPI",
    "authorization_header",
    "borrowed",
    "client_of",
    "client_options",
    "credentials_hint",
    "credentials_setting",
    "prefect_settings_api_url",
    "preset",
]

#: Pauses before retrying a 503 (each stretched by up to 2x at random; the
#: last one repeats until the request's time is up).
_RETRY_DELAYS = (0.05, 0.1, 0.2, 0.4)
#: Seconds an *extra* write (the Prefect UI's run name and summary) may wait
#: for its turn: it goes after every job's own writes, so under a burst it
#: waits until the burst's states are written.
EXTRA_WAIT = 60.0

#: Prefect's own refusal of a state transition (e.g. to Running after a cancel).
REJECTED = "REJECT"


def prefect_settings_api_url() -> str | None:
    """The API URL from Prefect's settings (``PREFECT_API_URL`` or profile).

    The environment is read at call time: Prefect's settings object is built
    once at import, before ``pygeoapi-prefect serve`` may have set it.
    Prefect is not imported for it when the environment and the profile
    decide (:mod:`~pygeoapi_prefect.prefect.api_settings`).
    """
    return _api_url_of(api_settings())


def _api_url_of(settings: ApiSettings) -> str | None:
    url = os.environ.get("PREFECT_API_URL") or settings.url
    return str(url).rstrip("/") if url else None


def credentials_setting() -> str | None:
    """The name of the Prefect setting whose credentials are sent, or None if none are set.

    As Prefect's own client does: ``PREFECT_API_AUTH_STRING`` (basic auth, a
    self-hosted server started with ``PREFECT_SERVER_API_AUTH_STRING``) wins
    over ``PREFECT_API_KEY`` (a bearer token: Prefect Cloud, or a gateway),
    so the manager, its job processes and Prefect's workers all send the same.
    """
    api = api_settings()
    if api.auth_string:
        return "PREFECT_API_AUTH_STRING"
    if api.key:
        return "PREFECT_API_KEY"
    return None


def authorization_header() -> str | None:
    """The ``Authorization`` header Prefect's settings call for (:func:`credentials_setting`)."""
    api = api_settings()
    setting = credentials_setting()
    if setting == "PREFECT_API_AUTH_STRING" and api.auth_string:
        import base64

        token = base64.b64encode(api.auth_string.encode()).decode()
        return f"Basic {token}"
    if setting == "PREFECT_API_KEY" and api.key:
        return f"Bearer {api.key}"
    return None


def credentials_hint(status: int, *, url_credentials: bool = False) -> str:
    """What to check when Prefect answered ``status`` (401/403): names settings, never values.

    ``url_credentials``: the API URL carried ``user:password@`` (sent when no
    setting holds credentials).
    """
    setting = credentials_setting()
    if setting is None and url_credentials:
        return "the user:password in the Prefect API URL were refused"
    if setting is None:
        return (
            "no credentials are set: set PREFECT_API_AUTH_STRING to the user:password the "
            "server was started with (PREFECT_SERVER_API_AUTH_STRING), or PREFECT_API_KEY "
            "for Prefect Cloud"
        )
    if setting == "PREFECT_API_AUTH_STRING":
        return (
            "the basic-auth credentials of PREFECT_API_AUTH_STRING were refused: they must "
            "equal the server's PREFECT_SERVER_API_AUTH_STRING (user:password)"
        )
    what = "refused" if status == 401 else "not allowed this request"
    return f"the bearer key of PREFECT_API_KEY was {what}: check the key and its workspace"


@dataclass(frozen=True)
class ClientOptions:
    """What Prefect's settings say about talking to its API (plain data: crosses processes)."""

    headers: dict[str, str]
    #: Check TLS certificates; ``cafile``: against this bundle instead of the system's.
    verify: bool = True
    cafile: str | None = None


def client_options() -> ClientOptions:
    """Credentials and TLS from Prefect's own settings (:func:`api_settings`)."""
    api = api_settings()
    headers = {"Accept": "application/json"}
    authorization = authorization_header()
    if authorization:
        headers["Authorization"] = authorization
    verify = not api.tls_insecure_skip_verify
    return ClientOptions(headers, verify, api.ssl_cert_file if verify else None)


_PRESET: list[ClientOptions] = []


def preset(options: ClientOptions) -> None:
    """Use ``options`` for every client of this process instead of reading Prefect's settings.

    For the local pool's job processes, which so never import Prefect
    (~60 MiB and a second of each job).
    """
    _PRESET[:] = [options]


#: One TLS context per (verify, CA bundle) and process, shared by every
#: client: each context loads its CA bundle (a MiB or more, milliseconds);
#: one made before a fork serves the children (it holds no connection).
_TLS_CONTEXTS: dict[tuple[bool, str | None], ssl.SSLContext] = {}


def _tls_context(verify: bool, cafile: str | None) -> ssl.SSLContext:
    key = (verify, cafile)
    context = _TLS_CONTEXTS.get(key)
    if context is None:
        if verify and cafile:
            context = ssl.create_default_context(cafile=cafile)
        else:
            # httpx's own: certifi's bundle (or SSL_CERT_FILE), or no checks.
            context = httpx.create_ssl_context(verify=verify)
        context = _TLS_CONTEXTS.setdefault(key, context)
    return context


#: The write gate's ranks: what a client waits for (creating a job's run),
#: a job's own steps (claims, states, labels), and the Prefect UI's extras.
URGENT, NORMAL, EXTRA = 0, 1, 2


class _WriteGate:
    """A first-come, first-served semaphore whose callers go by rank, then in order.

    First come, first served: with a plain semaphore an unlucky writer could
    lose the race again and again and run out of time under load.
    """

    def __init__(self, slots: int) -> None:
        self._changed = threading.Condition()
        self._free = slots
        self._queues: tuple[collections.deque[object], ...] = tuple(
            collections.deque() for _ in (URGENT, NORMAL, EXTRA)
        )

    def _first(self, ticket: object, rank: int) -> bool:
        if any(self._queues[higher] for higher in range(rank)):
            return False
        return self._queues[rank][0] is ticket

    def acquire(self, timeout: float, *, rank: int = NORMAL) -> bool:
        deadline = time.monotonic() + timeout
        ticket = object()
        queue = self._queues[rank]
        with self._changed:
            queue.append(ticket)
            try:
                while self._free == 0 or not self._first(ticket, rank):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._changed.wait(remaining)
                self._free -= 1
                return True
            finally:
                queue.remove(ticket)
                self._changed.notify_all()

    def release(self) -> None:
        with self._changed:
            self._free += 1
            self._changed.notify_all()


#: A gate shared with other processes: ``acquire(timeout, urgent)`` returns
#: the function that releases the turn it got, or None if it got none in time.
SharedGate = Callable[[float, bool], Callable[[], None] | None]


class PrefectAPI:
    """Thread-safe, lazily connected Prefect REST client.

    Example::

        api = PrefectAPI("http://127.0.0.1:4200/api", timeout=5)
        run = api.read_flow_run("0b8f...")

    Args:
        api_url: Base URL of the Prefect API, ending in ``/api``.
        timeout: Seconds a request may take; connecting is capped at 3 s.
        write_concurrency: How many writing requests may be in flight at once.
        shared_writes: a gate the writes pass after this client's own, shared by
            the processes of one server (their writes in flight at once, together).

    """

    def __init__(
        self,
        api_url: str,
        *,
        timeout: float = 5.0,
        write_concurrency: int = 1,
        shared_writes: SharedGate | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.timeout = timeout
        # A Prefect server on SQLite serialises writes, and badly: measured
        # here, 40 creates from 20 threads took 1.3 s one at a time, 3.2 s
        # two at a time and 3.9 s all at once. Queueing them here is faster.
        self._writes = _WriteGate(write_concurrency)
        # Each worker process of a server has a client of its own: the same
        # holds for them all together (execution/slots.py).
        self._shared_writes = shared_writes
        self._client: httpx.Client | None = None
        #: The process that made ``_client`` (a forked child makes its own).
        self._pid = 0
        self._lock = threading.Lock()
        self._flow_ids: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"PrefectAPI({self._shown_url!r})"

    @property
    def ui_url(self) -> str:
        """Base URL of the Prefect UI that belongs to this API."""
        settings = api_settings()  # once: job documents call this for every link
        configured = settings.ui_url
        if configured and self.api_url == _api_url_of(settings):
            return without_credentials(str(configured).rstrip("/"))
        # Links to the UI go into job documents: never with credentials.
        return without_credentials(self.api_url).removesuffix("/api")

    def flow_run_url(self, flow_run_id: str) -> str:
        """The page of a flow run in the Prefect UI."""
        return f"{self.ui_url}/runs/flow-run/{flow_run_id}"

    def _http(self) -> httpx.Client:
        if self._client is None or self._pid != os.getpid():
            with self._lock:
                if self._client is None or self._pid != os.getpid():
                    # A client made before a fork holds the parent's
                    # connections: never used here (nor closed: they are the
                    # parent's). A new pool, on the TLS context made before.
                    self._client = self._build_client()
                    self._pid = os.getpid()
        return self._client

    def _build_client(self) -> httpx.Client:
        options = _PRESET[0] if _PRESET else client_options()
        headers = dict(options.headers)
        auth: httpx.BasicAuth | None = None
        parts = urlsplit(self.api_url)
        if parts.username is not None and "Authorization" not in headers:
            # user:password in the URL: sent as basic auth, but kept out of
            # the base URL, which httpx writes into every log line.
            auth = httpx.BasicAuth(unquote(parts.username), unquote(parts.password or ""))
        return httpx.Client(
            base_url=without_credentials(self.api_url),
            headers=headers,
            auth=auth,
            verify=self._tls(options),
            timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 3.0)),
            # Expire idle connections before the server's keep-alive (5 s by
            # default) closes them under us.
            limits=httpx.Limits(
                max_connections=64, max_keepalive_connections=16, keepalive_expiry=3.0
            ),
        )

    def prepare(self) -> None:
        """Make ready what every client needs, without a client: for a process that forks.

        The local pool's template calls it: its job processes then share,
        copy-on-write, the transport's imports (httpcore, h11, certifi) and
        the TLS context, instead of each making them after its fork. No
        client is made here, so no connection can cross a fork; a job
        process makes its own pool (:meth:`_http`).
        """
        import httpcore  # noqa: F401 - imported by httpx's transport on its first client

        self._tls(_PRESET[0] if _PRESET else client_options())

    def _tls(self, options: ClientOptions) -> ssl.SSLContext:
        # Plain HTTP needs no certificates (loading the CA bundle costs each
        # process a few MiB and milliseconds).
        verify = options.verify and urlsplit(self.api_url).scheme == "https"
        return _tls_context(verify, options.cafile if verify else None)

    def close(self) -> None:
        """Close the connection pool (it reopens on the next request)."""
        with self._lock:
            if self._client is not None and self._pid == os.getpid():
                self._client.close()
            self._client = None

    @property
    def _shown_url(self) -> str:
        # The URL as clients and logs may see it: never with credentials.
        parts = urlsplit(self.api_url)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        return urlunsplit((parts.scheme, host, parts.path, "", ""))

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        # The one place where transport errors become ours.
        try:
            yield
        except httpx.TransportError as exc:
            logger.warning("Prefect API %s unreachable during %s: %r", self._shown_url, what, exc)
            raise PrefectUnavailable(
                f"The Prefect API at {self._shown_url} is unreachable ({what}); try again later"
            ) from exc

    def _send(
        self,
        method: str,
        path: str,
        json: Any,
        gate_deadline: float,
        end: float | None = None,
        *,
        extra: bool = False,
    ) -> tuple[httpx.Response, float]:
        # Returns the answer and the seconds spent waiting for the write gate.
        gate = (
            self._writes if method != "GET" and not path.endswith(("/filter", "/count")) else None
        )
        # Creating a job's run is what a client waits for: it goes first.
        urgent = method == "POST" and path.endswith(("/flow_runs/", "/create_flow_run", "/flows/"))
        rank = URGENT if urgent else EXTRA if extra else NORMAL
        queued = time.monotonic()
        if gate is not None and not gate.acquire(max(0.0, gate_deadline - queued), rank=rank):
            raise PrefectUnavailable(
                f"The Prefect API at {self._shown_url} is too busy ({method} {path} waited "
                f"{gate_deadline - queued:g} s for its turn); try again later"
            )
        shared_release = None
        if gate is not None and self._shared_writes is not None:
            shared_release = self._shared_writes(max(0.0, gate_deadline - time.monotonic()), urgent)
            if shared_release is None:
                gate.release()
                raise PrefectUnavailable(
                    f"The Prefect API at {self._shown_url} is too busy ({method} {path} waited "
                    f"{gate_deadline - queued:g} s for its turn among this server's processes); "
                    "try again later"
                )
        waited = time.monotonic() - queued
        timeout: Any = httpx.USE_CLIENT_DEFAULT
        if end is not None:
            left = max(0.05, end - time.monotonic())
            timeout = httpx.Timeout(left, connect=min(left, 3.0))
        try:
            try:
                return self._http().request(method, path, json=json, timeout=timeout), waited
            except (httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError):
                # A kept-alive connection the server closed as we reused it.
                # Every request here is safe to send again (a create carries
                # an idempotency key), so try once more on a new connection.
                return self._http().request(method, path, json=json, timeout=timeout), waited
        finally:
            if shared_release is not None:
                shared_release()
            if gate is not None:
                gate.release()

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        allow_404: bool = False,
        budget: float | None = None,
        extra: bool = False,
    ) -> httpx.Response:
        """Send one request, timed and counted (:mod:`pygeoapi_prefect.metrics`).

        See :meth:`_request`.
        """
        with metrics.prefect_call(method, path):
            return self._request(
                method, path, json=json, allow_404=allow_404, budget=budget, extra=extra
            )

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        allow_404: bool = False,
        budget: float | None = None,
        extra: bool = False,
    ) -> httpx.Response:
        """Send one request; map transport errors and error answers onto ours.

        A 503 is retried, with growing pauses, until ``timeout`` has passed:
        a Prefect server on SQLite answers 503 when its database is locked by
        a concurrent write, and the next attempt usually succeeds. (Creating
        a flow run is safe to retry: its idempotency key makes a second
        attempt return the first run.) Writes first wait for their turn, up
        to ``timeout`` more: at most twice ``timeout`` in all, unless a
        ``budget`` (seconds, for everything) is given: a request in which a
        client waits for its answer passes what is left of its own bound.
        A 404 is returned only where the caller expects one. An ``extra``
        write (the Prefect UI's niceties) waits for its turn after every
        other write, up to :data:`EXTRA_WAIT`.
        """
        started = time.monotonic()
        turn = EXTRA_WAIT if extra else self.timeout
        end = None if budget is None else started + max(0.0, budget)
        waited = 0.0
        attempt = 0
        while True:
            gate_deadline = started + turn if end is None else min(started + turn, end)
            with self._errors(f"{method} {path}"):
                response, queued = self._send(method, path, json, gate_deadline, end, extra=extra)
            waited += queued
            deadline = started + waited + self.timeout if end is None else end
            if response.status_code != 503:
                break
            delay = _RETRY_DELAYS[min(attempt, len(_RETRY_DELAYS) - 1)] * (1 + random.random())
            if time.monotonic() + delay > deadline:
                break
            attempt += 1
            time.sleep(delay)
        if response.status_code in (502, 503):
            raise PrefectUnavailable(
                f"The Prefect API at {self._shown_url} is unavailable "
                f"({response.status_code} on {method} {path}); try again later"
            )
        if response.status_code == 404 and allow_404:
            return response
        if response.status_code in (401, 403):
            # Never the credentials themselves: only which setting held them.
            hint = credentials_hint(
                response.status_code, url_credentials=urlsplit(self.api_url).username is not None
            )
            logger.error(
                "Prefect API %s refused %s %s (%s): %s",
                self._shown_url,
                method,
                path,
                response.status_code,
                hint,
            )
            raise PrefectAuthFailed(
                f"The Prefect API at {self._shown_url} refused {method} {path} "
                f"({response.status_code}): {hint}"
            )
        if response.status_code >= 400:
            # The body may echo what was sent (job inputs): debug level only.
            # A 409 is how an election is lost (a variable created first elsewhere):
            # the caller's business, not an error of this client.
            level = logging.DEBUG if response.status_code == 409 else logging.ERROR
            logger.log(level, "Prefect API %s %s answered %s", method, path, response.status_code)
            logger.debug("Prefect API answer: %s", response.text[:500])
            raise PrefectRequestFailed(
                f"The Prefect API refused {method} {path} ({response.status_code})",
                status=response.status_code,
            )
        return response

    def _json(self, method: str, path: str, body: Any = None, budget: float | None = None) -> Any:
        return self._decode(self.request(method, path, json=body, budget=budget))

    def _decode(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            request = response.request
            raise PrefectRequestFailed(
                f"The Prefect API at {self._shown_url} answered {request.method} "
                f"{request.url.path} with no JSON; is it the API URL (ending in /api)?"
            ) from exc

    # -- flows -------------------------------------------------------------

    def flow_id(self, name: str) -> str:
        """The id of the flow called ``name``, created on first use and cached."""
        flow_id = self._flow_ids.get(name)
        if flow_id is None:
            flow_id = str(self._json("POST", "/flows/", {"name": name})["id"])
            self._flow_ids[name] = flow_id
        return flow_id

    def deployment_id(self, name: str) -> str | None:
        """The id of deployment ``flow/deployment``, or None if Prefect has none."""
        flow_name, _, deployment = name.partition("/")
        response = self.request(
            "GET", f"/deployments/name/{flow_name}/{deployment}", allow_404=True
        )
        if response.status_code == 404:
            return None
        return str(self._decode(response)["id"])

    def create_deployment_run(
        self,
        deployment_id: str,
        *,
        parameters: dict[str, Any],
        tags: list[str],
        labels: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create a (scheduled) flow run of a deployment, for its workers to run."""
        body: dict[str, Any] = {
            "parameters": parameters,
            "tags": tags,
            "idempotency_key": str(uuid.uuid4()),
        }
        if labels:
            body["labels"] = labels
        run: dict[str, Any] = self._json(
            "POST", f"/deployments/{deployment_id}/create_flow_run", body
        )
        return run

    def deployments_tagged(self, tag: str) -> list[dict[str, Any]]:
        """Deployments carrying ``tag``, each with its flow's name as ``flow_name``."""
        deployments: list[dict[str, Any]] = self._json(
            "POST", "/deployments/filter", {"deployments": {"tags": {"all_": [tag]}}, "limit": 200}
        )
        flow_ids = sorted({d["flow_id"] for d in deployments})
        flows = (
            self._json("POST", "/flows/filter", {"flows": {"id": {"any_": flow_ids}}})
            if flow_ids
            else []
        )
        names = {flow["id"]: flow["name"] for flow in flows}
        for deployment in deployments:
            deployment["flow_name"] = names.get(deployment["flow_id"], "")
        return deployments

    # -- flow runs ---------------------------------------------------------

    def create_flow_run(
        self,
        *,
        flow_name: str,
        state: dict[str, Any],
        tags: list[str],
        labels: dict[str, Any] | None = None,
        parameters: dict[str, Any] | None = None,
        budget: float | None = None,
    ) -> dict[str, Any]:
        """Create a flow run of the flow ``flow_name`` directly in ``state``."""
        body: dict[str, Any] = {
            "flow_id": self.flow_id(flow_name),
            "state": state,
            "tags": tags,
            "parameters": parameters or {},
            "idempotency_key": str(uuid.uuid4()),
        }
        if labels:
            body["labels"] = labels
        try:
            run: dict[str, Any] = self._json("POST", "/flow_runs/", body, budget)
        except PrefectRequestFailed as exc:
            if exc.status not in (404, 409):
                raise
            # The flow was deleted in Prefect since it was cached: make it anew.
            self._flow_ids.pop(flow_name, None)
            body["flow_id"] = self.flow_id(flow_name)
            run = self._json("POST", "/flow_runs/", body)
        return run

    def read_flow_run(self, flow_run_id: str) -> dict[str, Any] | None:
        """The flow run, or ``None`` when Prefect has no run with this id."""
        response = self.request("GET", f"/flow_runs/{flow_run_id}", allow_404=True)
        if response.status_code == 404:
            return None
        run: dict[str, Any] = self._decode(response)
        return run

    def set_state(
        self,
        flow_run_id: str,
        state: dict[str, Any],
        *,
        force: bool = False,
        budget: float | None = None,
    ) -> dict[str, Any]:
        """Propose a state; returns Prefect's orchestration result."""
        result: dict[str, Any] = self._json(
            "POST",
            f"/flow_runs/{flow_run_id}/set_state",
            {"state": state, "force": force},
            budget,
        )
        return result

    def update_labels(
        self, flow_run_id: str, labels: dict[str, Any], *, budget: float | None = None
    ) -> None:
        """Merge ``labels`` into the flow run's labels."""
        self.request("PATCH", f"/flow_runs/{flow_run_id}/labels", json=labels, budget=budget)

    def update_tags(self, flow_run_id: str, tags: list[str]) -> None:
        """Replace the flow run's tags."""
        self.request("PATCH", f"/flow_runs/{flow_run_id}", json={"tags": tags})

    def filter_flow_runs(
        self, flow_runs: dict[str, Any], *, sort: str, limit: int, offset: int
    ) -> list[dict[str, Any]]:
        """One page of flow runs matching a ``FlowRunFilter`` body."""
        runs: list[dict[str, Any]] = self._json(
            "POST",
            "/flow_runs/filter",
            {"flow_runs": flow_runs, "sort": sort, "limit": limit, "offset": offset},
        )
        return runs

    def count_flow_runs(self, flow_runs: dict[str, Any]) -> int:
        """How many flow runs match a ``FlowRunFilter`` body."""
        return int(self._json("POST", "/flow_runs/count", {"flow_runs": flow_runs}))

    def rename_flow_run(self, flow_run_id: str, name: str) -> None:
        """Give the flow run a new name (what the Prefect UI shows): an extra write."""
        self.request("PATCH", f"/flow_runs/{flow_run_id}", json={"name": name}, extra=True)

    # -- logs and artifacts ------------------------------------------------

    def create_logs(self, logs: list[dict[str, Any]], *, budget: float | None = None) -> None:
        """Add log lines (Prefect ``LogCreate`` bodies: name, level, message, timestamp...)."""
        self.request("POST", "/logs/", json=logs, budget=budget)

    def read_logs(self, flow_run_id: str, *, limit: int, offset: int) -> list[dict[str, Any]]:
        """One page of a flow run's log lines, oldest first (at most 200 a call)."""
        logs: list[dict[str, Any]] = self._json(
            "POST",
            "/logs/filter",
            {
                "logs": {"flow_run_id": {"any_": [flow_run_id]}},
                "sort": "TIMESTAMP_ASC",
                "limit": limit,
                "offset": offset,
            },
        )
        return logs

    def create_artifact(
        self, artifact: dict[str, Any], *, budget: float | None = None, extra: bool = False
    ) -> None:
        """Create an artifact (Prefect ``ArtifactCreate``: key, type, data, flow_run_id...).

        ``extra``: it goes after every other write (a summary the UI shows).
        """
        self.request("POST", "/artifacts/", json=artifact, budget=budget, extra=extra)


def client_of(api: PrefectAPI | str, *, timeout: float = 5.0) -> PrefectAPI:
    """``api`` itself, or a client of its own for an API URL (with ``timeout``).

    A local job's process hands its one client to its heartbeats, progress
    and log shipping; a deployed flow on a Prefect worker hands them the URL.
    """
    return PrefectAPI(api, timeout=timeout) if isinstance(api, str) else api


@contextmanager
def borrowed(api: PrefectAPI | str, *, timeout: float = 5.0) -> Iterator[PrefectAPI]:
    """:func:`client_of` ``api`` while inside; a client made for a URL is closed at the end."""
    client = client_of(api, timeout=timeout)
    try:
        yield client
    finally:
        if client is not api:
            client.close()
