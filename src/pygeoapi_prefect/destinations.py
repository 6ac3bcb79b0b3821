"""Outbound HTTP to URLs that users give, reaching only addresses that were checked.

Callback URIs (``subscriber``) and inputs given by reference are URLs chosen by
whoever calls the API. Fetched from inside the server's network they are a
way in (server-side request forgery): to a cloud metadata service
(``169.254.169.254``, ``100.100.100.200``), to Prefect, to anything on
loopback. Every such request goes through this module.

The rules:

- *Internal* means not globally reachable: an address whose
  :attr:`~ipaddress.IPv4Address.is_global` is false (loopback, private,
  link-local, shared address space ``100.64.0.0/10``, benchmarking
  ``198.18.0.0/15``, reserved, unspecified, ...), and multicast and IPv6
  site-local ones too. IPv6 forms that reach an IPv4 address (IPv4-mapped
  ``::ffff:a.b.c.d``, 6to4 ``2002::/16``, NAT64 ``64:ff9b::/96``) are judged
  by that IPv4 address. Decimal, hex and octal IPv4 spellings
  (``2130706433``, ``0x7f000001``, ``0177.0.0.1``, ``127.1``) are read by the
  resolver the way a connection would read them, so they are judged by the
  address they mean.
- ``allow`` lists networks (``10.0.0.0/8``, ``127.0.0.1``) and host names that
  may be reached although internal.
- A request connects to an address that was checked *for that connection*:
  the transport resolves the host once, refuses the request if any answer is
  internal, and connects to a checked answer (the next one if that fails);
  the ``Host`` header, TLS SNI and certificate verification keep the host
  name. There is no second lookup, so a DNS answer that changes between a
  check and the connection (rebinding) cannot reach loopback.
- Redirects are not followed unless a caller asks (``max_redirects``); each
  hop then goes through the same transport and is checked the same way.
- With ``proxy`` (an egress proxy) requests go through the proxy, which
  resolves names and applies its own rules; the check still runs here for
  names that resolve here (a name that does not is left to the proxy).
- Each request opens its own connection (no keep-alive): a pooled connection
  to an address could otherwise be reused for another host name on the same
  address, under the first name's TLS session.
- Nothing here logs or quotes a URL's path or query
  (:func:`pygeoapi_prefect.urls.origin`): they often carry tokens.
  :meth:`Destinations.stream` and :meth:`Destinations.post_json` call the
  transport directly, so httpx's client, which logs every whole URL at INFO,
  is not involved.

Usage::

    destinations = Destinations(["10.0.0.0/8"], allow_key="server.manager.callbacks.allow")
    destinations.problem("http://100.100.100.200/latest/meta-data/")
    # 'http://100.100.100.200 points at an internal address (100.100.100.200); ...'
    status = destinations.post_json("https://hooks.example/cb?t=...", {"a": 1}, timeout=10)
    with destinations.stream("GET", url, timeout=30, max_bytes=2**20, max_redirects=3) as answer:
        answer.status_code, answer.headers
        for chunk in answer.iter_bytes():  # ResponseTooLarge, httpx.ReadTimeout
            ...
    destinations.client()      # an httpx.Client on the checking transport (its log shows URLs)
    destinations.transport()   # the checking transport itself
    destinations.close()

Every failure is an :class:`httpx.HTTPError`: :class:`DestinationRefused`
(an :class:`httpx.ConnectError`: internal, or not http(s)), httpx's own
connect and timeout errors, and :class:`ResponseTooLarge`.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx

from pygeoapi_prefect.urls import origin

__all__ = [
    "DestinationRefused",
    "Destinations",
    "Download",
    "ResponseTooLarge",
    "is_internal",
]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
#: Checked answers a request tries, in the resolver's order, before giving up.
_MAX_ADDRESSES = 4
_SCHEMES = ("http", "https")


class DestinationRefused(httpx.ConnectError):
    """No connection was made: the destination is internal, or not an http(s) URL."""

    def __init__(self, message: str, *, reason: str = "", request: httpx.Request | None = None):
        super().__init__(message, request=request)
        #: The message without the host (for callers that name the URL their way).
        self.reason = reason or message


class ResponseTooLarge(httpx.HTTPError):
    """An answer's body is larger than the caller's ``max_bytes``."""


def is_internal(address: Address) -> bool:
    """True unless ``address`` is globally reachable (see the module docstring)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(address.packed[-4:])
        if embedded is not None:
            return is_internal(embedded)
        if address.is_site_local:
            return True
    return (
        not address.is_global
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def _host_key(host: str) -> str:
    return host.lower().rstrip(".")


class Destinations:
    """Which destinations outbound requests may reach, and the requests themselves.

    Args:
        allow: networks (``10.0.0.0/8``, ``127.0.0.1``) and host names that may
            be reached although internal.
        allow_key: the config key of ``allow``, named in refusals.
        proxy: an egress proxy URL (``http://proxy.internal:3128``) that every
            request goes through, instead of connecting to checked addresses.
        verify: TLS verification, as httpx takes it (``True``, an
            :class:`ssl.SSLContext`, a CA bundle path).

    Example::

        Destinations(["10.0.0.0/8"]).problem("http://10.1.2.3/x")  # None: allowed
    """

    def __init__(
        self,
        allow: Iterable[str] = (),
        *,
        allow_key: str = "allow",
        proxy: str | None = None,
        verify: ssl.SSLContext | str | bool = True,
    ) -> None:
        self.networks: list[_Network] = []
        self.hosts: set[str] = set()
        for entry in allow:
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.hosts.add(_host_key(entry))
        self.allow_key = allow_key
        self.proxy = proxy
        self.verify = verify
        self._transport: httpx.BaseTransport | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        shown = [str(n) for n in self.networks] + sorted(self.hosts)
        via = f" via {origin(self.proxy)}" if self.proxy else ""
        return f"<Destinations allow={shown}{via}>"

    # -- the check ----------------------------------------------------------

    def addresses(self, host: str, port: int) -> list[str]:
        """Resolve ``host`` once and check every answer; the checked addresses.

        Raises:
            DestinationRefused: an answer is internal and not allowed.
            httpx.ConnectError: the name does not resolve.
        """
        shown = f"[{host}]" if ":" in host else host
        try:
            # socket.getaddrinfo, looked up at call time: the tests' DNS seam.
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise httpx.ConnectError(f"the host {shown} cannot be resolved") from exc
        found: list[str] = []
        for info in infos:
            text = str(info[4][0])
            if text not in found:
                found.append(text)
        if _host_key(host) in self.hosts:
            return found
        for text in found:
            address = ipaddress.ip_address(text.partition("%")[0])
            if is_internal(address) and not any(address in net for net in self.networks):
                reason = f"points at an internal address ({address}); allow it in {self.allow_key}"
                raise DestinationRefused(f"{shown} {reason}", reason=reason)
        return found

    def problem(self, url: str) -> str | None:
        """Why ``url`` may not be reached, or ``None`` if it may (the text has no path)."""
        if not isinstance(url, str):
            return f"a {type(url).__name__} is not a URL string"
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:  # "Invalid IPv6 URL", "Port out of range"
            return f"not a valid URL ({exc})"
        if parts.scheme not in _SCHEMES or not parts.hostname:
            scheme = f"{parts.scheme[:20]}: " if parts.scheme else ""
            return f"a {scheme}URL without an http(s) host is not allowed"
        try:
            self.addresses(parts.hostname, port or (443 if parts.scheme == "https" else 80))
        except DestinationRefused as exc:
            return f"{origin(url)} {exc.reason}"
        except httpx.ConnectError:
            if not self.proxy:  # behind a proxy, names may resolve only there
                return f"the host of {origin(url)} cannot be resolved"
        try:
            httpx.URL(url)  # what the request will be made of
        except httpx.InvalidURL as exc:
            return f"not a valid URL ({str(exc).partition(':')[0]})"
        return None

    # -- requests -------------------------------------------------------------

    def transport(self) -> httpx.BaseTransport:
        """The transport that connects only to checked addresses (shared, thread-safe)."""
        with self._lock:
            if self._transport is None:
                if self.proxy:
                    self._transport = _ProxyTransport(self)
                else:
                    self._transport = PinnedTransport(self)
            return self._transport

    def client(self, **kwargs: Any) -> httpx.Client:
        """An :class:`httpx.Client` on :meth:`transport` (no environment proxies).

        httpx's client logs each request's whole URL at INFO: prefer
        :meth:`stream` for URLs that may carry tokens. With
        ``follow_redirects=True`` every hop is checked by the transport.
        """
        kwargs.setdefault("follow_redirects", False)
        return httpx.Client(transport=self.transport(), trust_env=False, **kwargs)

    @contextmanager
    def stream(
        self,
        method: str,
        url: str,
        *,
        timeout: float,
        max_bytes: int,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
        json: Any = None,
        max_redirects: int = 0,
    ) -> Iterator[Download]:
        """Send one request; the answer, its body read on demand within the limits.

        ``timeout`` bounds connecting and each read, and reading the body as a
        whole (checked between chunks); ``max_bytes`` bounds the body after
        decoding. Redirects of GET and HEAD are followed up to
        ``max_redirects`` hops (credential headers dropped when the origin
        changes); any other 3xx is returned as it is.

        Raises:
            httpx.HTTPError: refused, not reachable, or out of time.
        """
        deadline = time.monotonic() + timeout
        limits = httpx.Timeout(timeout, connect=min(timeout, 5.0)).as_dict()
        try:
            request = httpx.Request(
                method,
                url,
                headers=headers,
                content=content,
                json=json,
                extensions={"timeout": limits},
            )
        except httpx.InvalidURL as exc:
            raise DestinationRefused(f"not a valid URL ({str(exc).partition(':')[0]})") from exc
        transport = self.transport()
        hops = 0
        while True:
            response = transport.handle_request(request)
            response.request = request
            if not (
                response.is_redirect and hops < max_redirects and request.method in ("GET", "HEAD")
            ):
                break
            target = request.url.join(response.headers["location"])
            response.close()
            hops += 1
            forwarded = dict(headers or {})
            if target.scheme != request.url.scheme or target.netloc != request.url.netloc:
                for name in [n for n in forwarded if n.lower() in ("authorization", "cookie")]:
                    del forwarded[name]
            request = httpx.Request(
                request.method, target, headers=forwarded, extensions={"timeout": limits}
            )
        try:
            yield Download(response, max_bytes=max_bytes, deadline=deadline)
        finally:
            response.close()

    def post_json(self, url: str, document: Any, *, timeout: float) -> int:
        """POST ``document`` as JSON; the answer's status (its body is not read).

        Raises:
            httpx.HTTPError: refused, not reachable, or out of time.
        """
        with self.stream("POST", url, json=document, timeout=timeout, max_bytes=0) as answer:
            return answer.status_code

    def close(self) -> None:
        """Close the transport (a later request opens a new one)."""
        with self._lock:
            transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()


class Download:
    """An answer of :meth:`Destinations.stream`: status, headers, a bounded body."""

    def __init__(self, response: httpx.Response, *, max_bytes: int, deadline: float) -> None:
        self.response = response
        self.max_bytes = max_bytes
        self.deadline = deadline

    @property
    def status_code(self) -> int:
        """The HTTP status."""
        return self.response.status_code

    @property
    def headers(self) -> httpx.Headers:
        """The answer's headers."""
        return self.response.headers

    @property
    def url(self) -> httpx.URL:
        """The URL answered (the last hop's, when redirects were followed)."""
        return self.response.request.url

    def iter_bytes(self) -> Iterator[bytes]:
        """The body, decoded (gzip, ...), in chunks.

        Raises:
            ResponseTooLarge: past ``max_bytes`` (or announced so by Content-Length).
            httpx.ReadTimeout: the whole body took longer than the ``timeout``.
        """
        declared = self.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise ResponseTooLarge(
                f"the answer of {origin(str(self.url))} announces {declared} bytes, "
                f"more than {self.max_bytes}"
            )
        seen = 0
        for chunk in self.response.iter_bytes():
            seen += len(chunk)
            if seen > self.max_bytes:
                raise ResponseTooLarge(
                    f"the answer of {origin(str(self.url))} is larger than {self.max_bytes} bytes"
                )
            if time.monotonic() > self.deadline:
                raise httpx.ReadTimeout(f"the answer of {origin(str(self.url))} took too long")
            yield chunk

    def read(self) -> bytes:
        """The whole body (within the same limits)."""
        return b"".join(self.iter_bytes())


class PinnedTransport(httpx.BaseTransport):
    """Connects each request to an address checked for it, keeping the host name for HTTP and TLS.

    The URL's host is resolved and checked (:meth:`Destinations.addresses`),
    the request goes to the checked address (``Host`` unchanged; SNI and
    certificate checks on the name), and the URL is put back before the
    answer is returned.
    """

    def __init__(self, destinations: Destinations) -> None:
        self.destinations = destinations
        self._inner = httpx.HTTPTransport(
            verify=destinations.verify,
            trust_env=False,
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=0),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` to a checked address of its host."""
        url = request.url
        if url.scheme not in _SCHEMES or not url.raw_host:
            raise DestinationRefused(
                f"a {url.scheme[:20]}: URL without an http(s) host is not allowed", request=request
            )
        host = url.raw_host.decode("ascii")  # IDNA-encoded already
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            found = self.destinations.addresses(host, port)
        except httpx.ConnectError as exc:
            exc.request = request
            raise
        literal = _is_literal(host)
        if "host" not in request.headers:
            request.headers["Host"] = url.netloc.decode("ascii")
        if url.scheme == "https" and not literal:
            request.extensions = {**request.extensions, "sni_hostname": host}
        failure: httpx.ConnectError | None = None
        for address in found[:_MAX_ADDRESSES]:
            request.url = url.copy_with(host=address)
            try:
                return self._inner.handle_request(request)
            except httpx.ConnectError as exc:  # nothing sent yet: the next address
                failure = exc
            finally:
                request.url = url
        assert failure is not None  # getaddrinfo answers at least one address
        raise failure

    def close(self) -> None:
        """Close the connections."""
        self._inner.close()


class _ProxyTransport(httpx.BaseTransport):
    # Through the egress proxy: the proxy resolves and connects; names that
    # resolve here are still checked here.
    def __init__(self, destinations: Destinations) -> None:
        self.destinations = destinations
        self._inner = httpx.HTTPTransport(
            verify=destinations.verify, trust_env=False, proxy=destinations.proxy
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        problem = self.destinations.problem(str(request.url))
        if problem is not None:
            raise DestinationRefused(problem, request=request)
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return False
    return True
