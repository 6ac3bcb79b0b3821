"""Inputs given by reference, ``{"href": URL, "type": media type}``, read before the process runs.

OGC API - Processes lets any input value be a link. Before the processor
runs, each link is read and replaced by what it points at, as the input's
description wants it: a string input gets the text, a binary one
(``contentEncoding``, ``format: binary``, a non-text ``contentMediaType``)
the bytes, any other the parsed JSON. The value read is checked against
the input's schema and media type (OGC Core 2.0 draft: a server resolving
a reference validates what it resolved).

Where links may lead (``server.manager.references``):

- ``http(s)://`` through :class:`pygeoapi_prefect.destinations.Destinations`:
  no loopback, private, link-local, shared or metadata address unless
  ``allow``\\ ed; the connection goes to the address checked; a redirect is
  followed (at most :data:`MAX_REDIRECTS`) only to an address checked the same way;
- ``s3://bucket/key`` with the result store's credentials when the store is
  on S3, else the environment's, never credentials from the request;
- ``file://`` only below ``file_roots`` (after resolving ``..`` and links).

Every read stops at ``max_bytes`` (with or without a Content-Length) and
``timeout`` seconds in all. Each problem names its input: at submission a
400 before any job exists (:func:`check_references`, and the whole
resolution for a sync job run here); where an async or deployed job runs,
the job fails with that message. A process can take some inputs as links,
unread (``inputs.<id>.pass_reference: true`` in its processor block, or a
``pass_reference`` tuple of input ids on the processor class).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

from pygeoapi_prefect.errors import InvalidInputs
from pygeoapi_prefect.execution.validation import is_reference, value_problems
from pygeoapi_prefect.urls import origin

logger = logging.getLogger(__name__)

__all__ = [
    "MAX_REDIRECTS",
    "ReferencePolicy",
    "check_references",
    "is_reference",
    "passed_as_links",
    "resolve_references",
]

#: Redirects followed when reading an http(s) reference (each hop checked).
MAX_REDIRECTS = 3
_KEY = "server.manager.references"


@dataclass(frozen=True)
class ReferencePolicy:
    """What reading references may do (``server.manager.references``), as plain data.

    ``store_url`` and ``store_options`` are the result store's: an S3 store's
    credentials read ``s3://`` references.
    """

    allow: tuple[str, ...] = ()
    max_bytes: int = 100 * 1024 * 1024
    timeout: float = 30
    file_roots: tuple[str, ...] = ()
    store_url: str = ""
    store_options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_settings(
        cls, settings: Mapping[str, Any] | None, store_url: str = "", store_options: Any = None
    ) -> ReferencePolicy:
        """From the ``server.manager.references`` block (a dict) and the store's settings."""
        settings = settings or {}
        return cls(
            allow=tuple(settings.get("allow") or ()),
            max_bytes=int(settings.get("max_bytes", 100 * 1024 * 1024)),
            timeout=float(settings.get("timeout", 30)),
            file_roots=tuple(settings.get("file_roots") or ()),
            store_url=store_url,
            store_options=dict(store_options or {}),
        )

    def settings(self) -> dict[str, Any]:
        """The ``server.manager.references`` block again (what crosses to a worker)."""
        return {
            "allow": list(self.allow),
            "max_bytes": self.max_bytes,
            "timeout": self.timeout,
            "file_roots": list(self.file_roots),
        }


class _Refused(Exception):
    """A reference that may not, or cannot, be read (the text names no secret)."""


def passed_as_links(process_conf: Mapping[str, Any], processor: Any = None) -> frozenset[str]:
    """The inputs a process takes as links, unread (``inputs.<id>.pass_reference``)."""
    block = process_conf.get("processor") if "processor" in process_conf else process_conf
    inputs = (block or {}).get("inputs") or {}
    found = {
        name
        for name, settings in inputs.items()
        if isinstance(settings, dict) and settings.get("pass_reference") is True
    }
    found.update(getattr(processor, "pass_reference", ()) or ())
    return frozenset(found)


def _occurrences(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _each_reference(
    inputs: Mapping[str, Any], metadata: Mapping[str, Any], skip: Collection[str]
) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    described = metadata.get("inputs") or {}
    found = []
    for name, value in inputs.items():
        if name in skip:
            continue
        schema = ((described.get(name) or {}).get("schema")) or {}
        for occurrence in _occurrences(value):
            if is_reference(occurrence, schema):
                found.append((name, occurrence, schema))
    return found


# -- checks without reading ----------------------------------------------------------


def _destinations(policy: ReferencePolicy) -> Any:
    from pygeoapi_prefect.destinations import Destinations

    return Destinations(policy.allow, allow_key=f"{_KEY}.allow")


def _inside_roots(path: str, roots: Collection[str]) -> str:
    """The real path of a ``file://`` reference, if it is below a root."""
    if not roots:
        raise _Refused(f"file:// references are not allowed ({_KEY}.file_roots is empty)")
    real = os.path.realpath(path)
    for root in roots:
        top = os.path.realpath(root)
        if os.path.commonpath([top, real]) == top:
            return real
    raise _Refused(f"the file is outside {_KEY}.file_roots")


def _problem(href: str, policy: ReferencePolicy) -> str | None:
    # What can be said before reading: the scheme, the destination, the roots.
    try:
        parts = urlsplit(href)
    except ValueError:
        return "the href is not a valid URL"
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        problem = _destinations(policy).problem(href)
        return str(problem) if problem is not None else None
    if scheme == "s3":
        if not parts.netloc or not parts.path.strip("/"):
            return "an s3:// reference names a bucket and a key (s3://bucket/key)"
        return None
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            return "a file:// reference names a local path (file:///path)"
        try:
            _inside_roots(unquote(parts.path), policy.file_roots)
        except _Refused as exc:
            return str(exc)
        return None
    return f"references are http(s)://, s3:// or file:// URLs, not {scheme[:20] or 'this'}"


def check_references(
    inputs: Mapping[str, Any],
    metadata: Mapping[str, Any],
    policy: ReferencePolicy,
    skip: Collection[str] = (),
) -> None:
    """Raise :class:`InvalidInputs` (400) naming each reference that may not be read.

    Reads nothing: the scheme, the destination rules and ``file_roots``.
    """
    problems = [
        f"input '{name}': {problem}"
        for name, link, _ in _each_reference(inputs, metadata, skip)
        if (problem := _problem(link["href"], policy))
    ]
    if problems:
        raise InvalidInputs("Invalid input reference: " + "; ".join(problems), problems=problems)


# -- reading ---------------------------------------------------------------------


def _read_http(href: str, policy: ReferencePolicy) -> tuple[bytes, str | None]:
    from pygeoapi_prefect.destinations import ResponseTooLarge

    try:
        with _destinations(policy).stream(
            "GET",
            href,
            timeout=policy.timeout,
            max_bytes=policy.max_bytes,
            max_redirects=MAX_REDIRECTS,
        ) as answer:
            if answer.status_code >= 300:
                raise _Refused(f"{origin(href)} answered {answer.status_code}")
            body = answer.read()
            media = answer.headers.get("content-type")
    except ResponseTooLarge as exc:
        raise _Refused(f"larger than {_KEY}.max_bytes ({policy.max_bytes} bytes)") from exc
    except httpx.TimeoutException as exc:
        raise _Refused(
            f"{origin(href)} did not answer in full within {_KEY}.timeout ({policy.timeout:g} s)"
        ) from exc
    except httpx.HTTPError as exc:
        reason = getattr(exc, "reason", None) or str(exc) or exc.__class__.__name__
        raise _Refused(f"{origin(href)} cannot be read: {reason}") from exc
    return body, media


def _bounded(handle: Any, max_bytes: int) -> bytes:
    data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise _Refused(f"larger than {_KEY}.max_bytes ({max_bytes} bytes)")
    return bytes(data)


def _read_s3(href: str, policy: ReferencePolicy) -> bytes:
    from fsspec.core import url_to_fs

    # The store's credentials when it is on S3; else the environment's.
    options = policy.store_options if policy.store_url.startswith(("s3://", "s3a://")) else {}
    try:
        fs, path = url_to_fs(href, **options)
        size = fs.size(path)
        if isinstance(size, int) and size > policy.max_bytes:
            raise _Refused(f"larger than {_KEY}.max_bytes ({policy.max_bytes} bytes)")
        with fs.open(path, "rb") as handle:
            return _bounded(handle, policy.max_bytes)
    except _Refused:
        raise
    except (OSError, ValueError, ImportError) as exc:
        raise _Refused(
            f"{href.split('?')[0]!r:.200} cannot be read with the result store's credentials "
            f"({exc.__class__.__name__})"
        ) from exc


def _read_file(href: str, policy: ReferencePolicy) -> bytes:
    path = _inside_roots(unquote(urlsplit(href).path), policy.file_roots)
    try:
        if os.path.getsize(path) > policy.max_bytes:
            raise _Refused(f"larger than {_KEY}.max_bytes ({policy.max_bytes} bytes)")
        with open(path, "rb") as handle:  # noqa: PTH123 - a bounded read of a checked path
            return _bounded(handle, policy.max_bytes)
    except OSError as exc:
        raise _Refused(f"the file cannot be read ({exc.__class__.__name__})") from exc


def _read(href: str, policy: ReferencePolicy) -> tuple[bytes, str | None]:
    problem = _problem(href, policy)
    if problem is not None:
        raise _Refused(problem)
    scheme = urlsplit(href).scheme.lower()
    if scheme in ("http", "https"):
        return _read_http(href, policy)
    if scheme == "s3":
        return _read_s3(href, policy), None
    return _read_file(href, policy), None


# -- what the input receives -------------------------------------------------------------

_JSON_KINDS = ("object", "array", "number", "integer", "boolean")


def _bare(media_type: str | None) -> str:
    return (media_type or "").split(";")[0].strip().lower()


def _is_json(media_type: str) -> bool:
    return media_type == "application/json" or media_type.endswith("+json")


def _accepted_types(schema: Mapping[str, Any]) -> set[str]:
    found = set()
    for candidate in [schema, *(schema.get("oneOf") or []), *(schema.get("anyOf") or [])]:
        if isinstance(candidate, dict) and isinstance(candidate.get("contentMediaType"), str):
            found.add(_bare(candidate["contentMediaType"]))
    return found


def _kind(schema: Mapping[str, Any], media_type: str) -> str:
    """``json``, ``text`` or ``bytes``: what the input receives."""
    kind = schema.get("type")
    declared = _bare(schema.get("contentMediaType"))
    if kind in _JSON_KINDS:
        return "json"
    if kind == "string":
        binary = (
            "contentEncoding" in schema
            or schema.get("format") in ("binary", "byte")
            or (declared and not declared.startswith("text/") and not _is_json(declared))
        )
        return "bytes" if binary else "text"
    if _is_json(media_type):
        return "json"
    if media_type.startswith("text/"):
        return "text"
    return "bytes"


def _media_problem(schema: Mapping[str, Any], declared: str, served: str) -> str | None:
    accepted = _accepted_types(schema)
    if not accepted:
        return None
    for media in (declared, served):
        # A generic type says nothing: only a named type other than the input's is wrong.
        if media and media != "application/octet-stream" and media not in accepted:
            return f"media type {media!r:.80} where the input takes {', '.join(sorted(accepted))}"
    return None


def _value(
    name: str, link: dict[str, Any], schema: Mapping[str, Any], policy: ReferencePolicy
) -> Any:
    data, served_header = _read(link["href"], policy)
    declared = _bare(link.get("type"))
    served = _bare(served_header)
    problem = _media_problem(schema, declared, served)
    if problem is not None:
        raise _Refused(problem)
    kind = _kind(schema, declared or served)
    if kind == "bytes":
        return data
    try:
        text = data.decode("utf-8")
        value: Any = json.loads(text) if kind == "json" else text
    except ValueError as exc:
        what = "JSON" if kind == "json" else "UTF-8 text"
        raise _Refused(f"the resolved value is not {what}") from exc
    problems = value_problems(name, value, dict(schema))
    if problems:
        raise _Refused("the resolved value does not match the schema: " + "; ".join(problems))
    return value


def resolve_references(
    inputs: Mapping[str, Any],
    metadata: Mapping[str, Any],
    policy: ReferencePolicy,
    skip: Collection[str] = (),
) -> dict[str, Any]:
    """The inputs with each reference replaced by what it points at.

    Raises:
        InvalidInputs: naming each input whose reference may not or cannot be
            read, or whose value does not match its description.
    """
    described = metadata.get("inputs") or {}
    resolved: dict[str, Any] = {}
    problems: list[str] = []
    for name, value in inputs.items():
        schema = ((described.get(name) or {}).get("schema")) or {}
        if name in skip:
            resolved[name] = value
            continue

        def one(occurrence: Any, name: str = name, schema: Any = schema) -> Any:
            if not is_reference(occurrence, schema):
                return occurrence
            try:
                return _value(name, occurrence, schema, policy)
            except _Refused as exc:
                problems.append(f"input '{name}': {exc}")
                return None

        resolved[name] = [one(v) for v in value] if isinstance(value, list) else one(value)
    if problems:
        logger.info("input references refused: %s", "; ".join(problems))
        raise InvalidInputs("Invalid input reference: " + "; ".join(problems), problems=problems)
    return resolved
