"""Checks on raw request bodies, before pygeoapi's handlers read them.

pygeoapi 0.24 parses an execute request with ``json.loads`` and then calls
``.get`` on whatever came out: a JSON array, a string, a ``subscriber`` that
is not an object, invalid UTF-8 or a very deep nesting each end in a 500
with a traceback. Here every execute body is checked first, and a bad one
answers 400 (or 413 when it is too large) with a message saying what is
wrong:

- the body is at most ``server.manager.limits.max_request_bytes`` long;
- it is UTF-8, and JSON no deeper than ``server.manager.limits.max_json_depth``;
- it holds no ``\\u0000`` and no lone surrogate (neither can be stored in
  Prefect's database, nor encoded as UTF-8);
- it is an object; ``inputs`` and ``outputs``, when given, are objects;
  ``response`` is ``raw`` or ``document``; ``subscriber`` is an object with a
  string ``successUri`` (and string ``inProgressUri``/``failedUri`` if any).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from pygeoapi_prefect.errors import InvalidRequestBody, RequestTooLarge

__all__ = ["check_execute_body", "check_size"]

_MAX_BYTES_KEY = "server.manager.limits.max_request_bytes"
_MAX_DEPTH_KEY = "server.manager.limits.max_json_depth"
#: A JSON string literal; used on text json.loads accepted, where every one ends.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
#: Outside its strings, valid JSON is brackets and these (numbers, literals, blanks).
_NOT_BRACKETS = str.maketrans("", "", "0123456789.,:-+eE \t\r\ntrufalsn")
#: An innermost array or object (once all but brackets are gone).
_INNERMOST = re.compile(r"\[\]|\{\}")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_RESPONSES = ("raw", "document")
_SUBSCRIBER_KEYS = ("successUri", "inProgressUri", "failedUri")


def check_size(length: int | None, limit: int) -> None:
    """Raise :class:`RequestTooLarge` if a body of ``length`` bytes is over ``limit``."""
    if length is not None and length > limit:
        raise RequestTooLarge(
            f"The request body ({length} bytes) is larger than the {limit} bytes "
            f"this server accepts ({_MAX_BYTES_KEY})"
        )


def json_depth(text: str, limit: int) -> int:
    """How deeply arrays and objects nest in a valid JSON text, counted up to ``limit + 1``.

    Each pass of a C-speed regex removes the innermost level, so the cost is
    bounded by ``limit`` passes however the text is built.
    """
    brackets = _STRING.sub("", text).translate(_NOT_BRACKETS)
    depth = 0
    while brackets and depth <= limit:
        brackets = _INNERMOST.sub("", brackets)
        depth += 1
    return depth


def _parse(body: bytes, max_depth: int) -> Any:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequestBody(
            f"The request body is not valid UTF-8 (byte {exc.start}); send JSON in UTF-8"
        ) from exc
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequestBody(
            f"The request body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from exc
    except RecursionError as exc:
        raise InvalidRequestBody(
            f"The request body nests arrays and objects too deeply; at most {max_depth} "
            f"levels are accepted ({_MAX_DEPTH_KEY})"
        ) from exc
    depth = json_depth(text, max_depth)
    if depth > max_depth:
        raise InvalidRequestBody(
            f"The request body nests arrays and objects more than {max_depth} levels "
            f"deep ({_MAX_DEPTH_KEY})"
        )
    if "\\u0000" in text or _SURROGATE_ESCAPE.search(text):
        # Seen in the text (maybe after an escaped backslash): look at the strings.
        for string in _strings(document):
            if "\x00" in string:
                raise InvalidRequestBody("The request body holds a NUL character (\\u0000)")
            try:
                string.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise InvalidRequestBody(
                    "The request body holds a lone UTF-16 surrogate (\\ud800-\\udfff), "
                    "which is not a character"
                ) from exc
    return document


def _strings(document: Any) -> Iterator[str]:
    """Every string in a parsed JSON document, keys included (no recursion)."""
    stack = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            yield node
        elif isinstance(node, dict):
            stack.extend(node)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _shape_problems(document: Any) -> list[str]:
    if not isinstance(document, dict):
        return [f"an execute request must be a JSON object, not {type(document).__name__}"]
    problems = []
    for key in ("inputs", "outputs"):
        if document.get(key) is not None and not isinstance(document[key], dict):
            problems.append(f"'{key}' must be a JSON object keyed by {key[:-1]} id")
    response = document.get("response", "raw")
    if response not in _RESPONSES:
        problems.append(f"'response' must be 'raw' or 'document', not {response!r:.80}")
    subscriber = document.get("subscriber")
    if subscriber is not None:
        if not isinstance(subscriber, dict):
            problems.append("'subscriber' must be a JSON object")
        else:
            if "successUri" not in subscriber:
                problems.append("'subscriber' needs a 'successUri'")
            problems.extend(
                f"'subscriber.{key}' must be a URI string"
                for key in _SUBSCRIBER_KEYS
                if key in subscriber and not isinstance(subscriber[key], str)
            )
    return problems


def check_execute_body(body: bytes, *, max_depth: int) -> None:
    """Raise :class:`InvalidRequestBody` if an execute request body cannot be used.

    An empty body passes: pygeoapi answers it itself (400, missing request data).

    Example::

        check_execute_body(b'{"inputs": {"name": "World"}}', max_depth=64)
    """
    if not body:
        return
    problems = _shape_problems(_parse(body, max_depth))
    if problems:
        raise InvalidRequestBody("Invalid execute request: " + "; ".join(problems))
