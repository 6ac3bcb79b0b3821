"""URLs as clients and logs may see them: never with credentials."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

__all__ = ["without_credentials"]


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
