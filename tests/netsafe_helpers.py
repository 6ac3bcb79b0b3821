"""Real listeners and a DNS seam for the outbound-HTTP tests (tests/test_destinations.py).

``FakeDNS`` replaces ``socket.getaddrinfo`` for a few test host names only
(every other name, and every address literal, goes to the real resolver):
each name answers from a script, one entry per lookup, the last repeated.
That is the seam the issue asks for: DNS is faked, HTTP is real.

``sitecustomize.py`` written by :func:`fake_dns_site` installs the same seam
in a server subprocess, from ``PYGEOAPI_TEST_FAKE_DNS``.
"""

from __future__ import annotations

import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

_REAL_GETADDRINFO = socket.getaddrinfo


class FakeDNS:
    """Scripted answers for some names; ``lookups`` records (name, answer) in order."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.lookups: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def __call__(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name not in self.answers:
            return _REAL_GETADDRINFO(host, port, *args, **kwargs)
        with self._lock:
            script = self.answers[name]
            done = sum(1 for looked, _ in self.lookups if looked == name)
            address = script[min(done, len(script) - 1)]
            self.lookups.append((name, address))
        # "a,b": one lookup answering several addresses, in that order.
        return [
            info
            for one in address.split(",")
            for info in _REAL_GETADDRINFO(one, port, type=socket.SOCK_STREAM)
        ]

    def count(self, name: str) -> int:
        return sum(1 for looked, _ in self.lookups if looked == name)


SITECUSTOMIZE = """
import json, os, socket, sys
sys.path.insert(0, {tests!r})
from netsafe_helpers import FakeDNS
socket.getaddrinfo = FakeDNS(json.loads(os.environ["PYGEOAPI_TEST_FAKE_DNS"]))
"""


def fake_dns_site(folder: Path, tests: Path) -> Path:
    """A folder with a ``sitecustomize.py`` that installs :class:`FakeDNS` at start-up."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE.format(tests=str(tests)))
    return folder


class Listener:
    """A real HTTP(S) server on one loopback address, recording what it gets.

    ``calls`` holds (method, path, Host header, SNI name or None, body).
    ``answer`` is (status, headers, body), or a callable of the handler
    returning one.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        answer: Any = (204, {}, b""),
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.calls: list[tuple[str, str, str, str | None, bytes]] = []
        self.answer = answer
        self.sni: list[str | None] = []
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                sni = getattr(self.connection, "pygeoapi_sni", None)
                listener.calls.append(
                    (self.command, self.path, self.headers.get("Host", ""), sni, body)
                )
                answer = listener.answer
                status, headers, content = answer(self) if callable(answer) else answer
                if status is None:
                    return  # the handler wrote its answer itself
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_HEAD = _any  # noqa: N815 - the http.server API

            def log_message(self, *args: object) -> None:
                pass

        server_class = ThreadingHTTPServer
        if ":" in host:

            class _V6(ThreadingHTTPServer):
                address_family = socket.AF_INET6

            server_class = _V6
        self.server = server_class((host, port), Handler)
        if tls is not None:

            def remember(sock: ssl.SSLSocket, name: str | None, context: ssl.SSLContext) -> None:
                listener.sni.append(name)
                sock.pygeoapi_sni = name  # type: ignore[attr-defined]

            tls.sni_callback = remember
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.host = host
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class DeadTarget:
    """A listening socket that never accepts: connections open, nothing ever answers."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.socket = socket.socket()
        self.socket.bind((host, 0))
        self.socket.listen(128)
        self.port = self.socket.getsockname()[1]

    def close(self) -> None:
        self.socket.close()


def tls_contexts(tmp: Path, name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) TLS contexts: a test CA, and a certificate for ``name`` only."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pygeoapi-prefect test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (tmp / "ca.pem").write_bytes(ca.public_bytes(pem))
    (tmp / "leaf.pem").write_bytes(leaf.public_bytes(pem))
    (tmp / "leaf.key").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp / "leaf.pem", tmp / "leaf.key")
    client = ssl.create_default_context(cafile=str(tmp / "ca.pem"))
    return server, client
