"""URLs as clients and logs may see them: never with credentials."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

__all__ = ["origin", "without_credentials"]


def without_credentials(url: str) -> str:
    """``url`` without a ``user:password@`` part (and unchanged if it has none).

    Example::

        without_credentials("s3://KEY:SECRET@bucket/results")  # "s3://bucket/results"
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<an unparsable URL>"
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def origin(url: str) -> str:
    """Scheme, host and port of ``url``: what a log may show of a URL that carries tokens.

    Paths, queries, fragments and ``user:password@`` are left out (callback
    and download URLs often carry a token in one of them).

    Example::

        origin("https://hooks.example/cb/t0ken?sig=x")  # "https://hooks.example"
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except (ValueError, TypeError, AttributeError):
        return "<an unparsable URL>"
    host = parts.hostname
    if not parts.scheme or not host:
        return "<a URL without a host>"
    shown = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{shown}" + (f":{port}" if port is not None else "")
