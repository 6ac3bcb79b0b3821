"""A real HTTP server on loopback that serves the inputs of the by-reference tests.

Paths: ``/text.txt``, ``/data.bin``, ``/doc.json``, ``/bad.json`` (breaks the
schema), ``/garbage.json`` (not JSON), ``/image.png`` (a media type the
inputs do not take), ``/cog.tif``, ``/big`` (over the limit, with a
Content-Length), ``/big-chunked`` (over it, without one), ``/slow`` (one
byte a second), ``/redirect?to=<url>`` (302), ``/missing`` (404). Every
request is counted in :attr:`InputServer.hits`.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

DATA = bytes(range(256)) * 4
TIFF = b"II*\x00" + bytes(100)
FILES = {
    "/text.txt": ("text/plain; charset=utf-8", b"hello from a link"),
    "/data.bin": ("application/octet-stream", DATA),
    "/doc.json": ("application/json", b'{"n": 3}'),
    "/bad.json": ("application/json", b'{"n": "three"}'),
    "/garbage.json": ("application/json", b"{not json"),
    "/image.png": ("image/png", b"\x89PNG\r\n\x1a\n" + bytes(50)),
    "/cog.tif": ("image/tiff", TIFF),
    # What a refused reference would have read: its hit count must stay 0.
    "/internal-only": ("text/plain", b"internal"),
}


class InputServer:
    """Serves on 127.0.0.1, a free port, in a thread of the test process."""

    def __init__(self, big: int) -> None:
        self.big = big
        self.hits: Counter[str] = Counter()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                path = urlsplit(self.path).path
                server.hits[path] += 1
                if path in FILES:
                    media, body = FILES[path]
                    self._send(200, media, body)
                elif path == "/big":
                    self._send(200, "application/octet-stream", bytes(server.big + 1))
                elif path == "/big-chunked":
                    self._chunked(bytes(server.big + 1))
                elif path == "/slow":
                    self._slow()
                elif path == "/redirect":
                    target = parse_qs(urlsplit(self.path).query)["to"][0]
                    self.send_response(302)
                    self.send_header("Location", target)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    self._send(404, "text/plain", b"no such input")

            def _send(self, status: int, media: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", media)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _chunked(self, body: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    for start in range(0, len(body), 1024):
                        piece = body[start : start + 1024]
                        self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                    self.wfile.write(b"0\r\n\r\n")
                except OSError:
                    pass  # the reader stopped at its limit

            def _slow(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", "60")
                self.end_headers()
                try:
                    for _ in range(60):
                        self.wfile.write(b"x")
                        self.wfile.flush()
                        time.sleep(1)
                except OSError:
                    pass  # the reader gave up: its timeout held

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> InputServer:
        self.thread.start()
        return self

    def url(self, path: str, host: str = "localhost") -> str:
        return f"http://{host}:{self.port}{path}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
