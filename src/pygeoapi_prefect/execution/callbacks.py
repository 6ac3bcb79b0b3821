"""OGC API - Processes callbacks: POSTs to a job's ``subscriber`` URIs.

``inProgressUri`` gets the status document when the job starts running,
``successUri`` the results document when it succeeds, ``failedUri`` the
status document when it fails. Deliveries run in the background with
retries and back-off; they never hold up or fail a job.

Destinations are checked twice, when the job is submitted and again before
each delivery (a name may resolve elsewhere by then): a URL whose host is a
loopback, private, link-local or otherwise internal address is refused
unless the config allows it (``server.manager.callbacks.allow``).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import httpx

import pygeoapi_prefect.metrics as metrics
from pygeoapi_prefect.errors import InvalidInputs

logger = logging.getLogger(__name__)

__all__ = ["CallbackPolicy", "Subscriber"]

Subscriber = dict[str, str]  # successUri, inProgressUri, failedUri
_KEYS = ("successUri", "inProgressUri", "failedUri")

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _internal(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        # ::ffff:127.0.0.1 and 64:ff9b::7f00:1 reach IPv4 addresses: judge those.
        mapped = address.ipv4_mapped or address.sixtofour
        if mapped is not None:
            return _internal(mapped)
        if address in _NAT64:
            return _internal(ipaddress.IPv4Address(address.packed[-4:]))
    return (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_reserved
        or address.is_multicast
        or address.is_unspecified
    )


class CallbackPolicy:
    """Which callback destinations are allowed, and how deliveries are made.

    Args:
        allow: networks (``10.0.0.0/8``, ``127.0.0.1``) and host names that may
            be called even though they are internal.
        timeout: seconds one delivery attempt may take.
        retries: further attempts after a failed one (back-off 1, 2, 4... s).
    """

    def __init__(self, allow: Iterable[str] = (), *, timeout: float = 10, retries: int = 4) -> None:
        self.networks: list[_Network] = []
        self.hosts: set[str] = set()
        for entry in allow:
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.hosts.add(entry.lower())
        self.timeout = timeout
        self.retries = retries

    def problem(self, url: str) -> str | None:
        """Why ``url`` may not be called, or ``None`` if it may."""
        if not isinstance(url, str):
            return f"{url!r:.80} is not a URL string"
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:  # "Invalid IPv6 URL", "Port out of range"
            return f"{url!r:.200} is not a valid URL ({exc})"
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return f"{url!r:.200} is not an http(s) URL"
        host = parts.hostname.lower()
        if host in self.hosts:
            return None
        try:
            infos = socket.getaddrinfo(host, port or 80, proto=socket.IPPROTO_TCP)
        except (OSError, UnicodeError):
            return f"the host of {url!r} cannot be resolved"
        for info in infos:
            address = ipaddress.ip_address(info[4][0])
            if _internal(address) and not any(address in net for net in self.networks):
                return (
                    f"{url!r} points at an internal address ({address}); allow it in "
                    "server.manager.callbacks.allow"
                )
        return None

    def check(self, subscriber: Subscriber | None) -> None:
        """Raise :class:`InvalidInputs` (400) naming each refused destination."""
        if not subscriber:
            return
        problems = [
            f"subscriber {key}: {problem}"
            for key in _KEYS
            if subscriber.get(key) and (problem := self.problem(subscriber[key]))
        ]
        if problems:
            raise InvalidInputs("Invalid subscriber: " + "; ".join(problems), problems=problems)

    def send(
        self, subscriber: Subscriber | None, key: str, document: Any
    ) -> threading.Thread | None:
        """Deliver ``document`` to the subscriber's ``key`` URI in the background.

        Returns the delivering thread (to wait for), or None if there is no URI.
        """
        url = (subscriber or {}).get(key)
        if not url:
            return None
        thread = threading.Thread(
            target=lambda: metrics.callback_delivered(self._deliver(url, document)),
            name="pygeoapi-prefect-callback",
            daemon=True,
        )
        thread.start()
        return thread

    def _deliver(self, url: str, document: Any) -> str:
        # Returns the outcome (metrics.CALLBACK_OUTCOMES).
        for attempt in range(self.retries + 1):
            problem = self.problem(url)
            if problem is not None:
                logger.warning("callback not sent: %s", problem)
                return "blocked"
            try:
                # No redirects: a redirect could lead to an address refused above.
                response = httpx.post(url, json=document, timeout=self.timeout)
                if response.status_code < 500 and response.status_code != 429:
                    if response.status_code >= 400:
                        logger.warning("callback to %s refused: %s", url, response.status_code)
                        return "refused"
                    return "delivered"
                reason = f"answered {response.status_code}"
            except httpx.HTTPError as exc:
                reason = repr(exc)
            if attempt < self.retries:
                delay = 2.0**attempt
                logger.info("callback to %s %s; retrying in %.0f s", url, reason, delay)
                time.sleep(delay)
        logger.warning("callback to %s failed after %d attempts", url, self.retries + 1)
        return "failed"
