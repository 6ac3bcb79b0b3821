"""A real HTTP gateway on loopback that admits only ``Authorization: Bearer <key>``.

Self-hosted Prefect checks no bearer keys (only Prefect Cloud does), so the
tests put this in front of a Prefect server to see what ``PREFECT_API_KEY``
does: a request without the key, or with another, is answered 401 here; one
with it is forwarded with the upstream's own credentials (the server runs
with basic auth on), as an API gateway holding the backend's secret would.
Websocket upgrades are not forwarded (Prefect's clients send the key on
them only to Prefect Cloud URLs, and fall back to polling).

Example::

    with BearerProxy("http://127.0.0.1:4200/api", key="k", upstream_auth="u:p") as proxy:
        httpx.get(f"{proxy.api_url}/health", headers={"Authorization": "Bearer k"})
"""

from __future__ import annotations

import base64
import hmac
import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from pygeoapi_prefect.prefect.server import free_port

#: Headers of one hop, never forwarded.
_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
}


class BearerProxy:
    """The gateway: :attr:`api_url` stands for the upstream's API URL.

    Args:
        upstream_api_url: the Prefect API behind it (``http://host:port/api``).
        key: the one bearer key admitted (:attr:`key` may be changed while it
            runs: a rotated key).
        upstream_auth: ``user:password`` sent upstream as basic auth.

    """

    def __init__(self, upstream_api_url: str, *, key: str, upstream_auth: str | None) -> None:
        parts = urlsplit(upstream_api_url)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.key = key
        self.upstream_authorization = (
            "Basic " + base64.b64encode(upstream_auth.encode()).decode() if upstream_auth else None
        )
        self.port = free_port()
        self.forwarded = 0
        self.refused = 0
        self.upgrades = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def api_url(self) -> str:
        """The API URL clients use: the gateway's own."""
        return f"http://127.0.0.1:{self.port}/api"

    def _count(self, what: str) -> None:
        with self._lock:
            setattr(self, what, getattr(self, what) + 1)

    def admits(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header carries the current key."""
        scheme, _, token = (authorization or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), self.key.encode()
        )

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass  # quiet: the tests read the counters

            def _answer(self, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if not proxy.admits(self.headers.get("Authorization")):
                    proxy._count("refused")
                    self._answer(
                        401,
                        b'{"detail": "a bearer key is required"}',
                        [("Content-Type", "application/json"), ("WWW-Authenticate", "Bearer")],
                    )
                    return
                if self.headers.get("Upgrade"):
                    proxy._count("upgrades")
                    self._answer(501, b"websockets are not forwarded", [])
                    return
                headers = {
                    name: value
                    for name, value in self.headers.items()
                    if name.lower() not in _HOP and name.lower() != "authorization"
                }
                if proxy.upstream_authorization:
                    headers["Authorization"] = proxy.upstream_authorization
                if body:
                    headers["Content-Length"] = str(len(body))
                connection = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                try:
                    connection.request(self.command, self.path, body=body or None, headers=headers)
                    answer = connection.getresponse()
                    content = answer.read()
                    kept = [(n, v) for n, v in answer.getheaders() if n.lower() not in _HOP]
                    proxy._count("forwarded")
                    self._answer(answer.status, content, kept)
                except OSError:
                    self._answer(502, b"upstream unreachable", [])
                finally:
                    connection.close()

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _forward

        return Handler

    def start(self) -> BearerProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> BearerProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
