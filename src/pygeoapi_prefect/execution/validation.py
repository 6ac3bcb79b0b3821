"""Checking an execute request against its process description, before a job exists.

OGC API - Processes 1.0 (``/req/core/process-execute-input-validation``): a
request whose inputs do not match the description gets a 400 and no job.
Every problem is reported at once, each naming its input or output.
"""

from __future__ import annotations

import json
import logging
import math
from functools import lru_cache
from typing import Any

import jsonschema

from pygeoapi_prefect.errors import InvalidInputs

logger = logging.getLogger(__name__)

__all__ = ["check_execute_request", "is_reference", "value_problems"]

#: Keys of a qualified value (OGC qualifiedInputValue) besides ``value``.
_QUALIFIERS = {"mediaType", "encoding", "schema"}


@lru_cache(maxsize=1024)
def _validator(schema_json: str) -> jsonschema.protocols.Validator | None:
    schema = json.loads(schema_json)
    try:
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        # The process's own description is broken: not the client's fault.
        logger.warning("skipping an invalid input schema %s: %s", schema_json[:200], exc.message)
        return None
    return cls(schema)


def _max_occurs(description: dict[str, Any]) -> float:
    value = description.get("maxOccurs", 1)
    return math.inf if value == "unbounded" else float(value)


def _occurrences(value: Any, description: dict[str, Any], schema: dict[str, Any]) -> list[Any]:
    # Several occurrences come as a JSON array, unless the input's own schema
    # is an array (then the array is one value).
    if isinstance(value, list) and _max_occurs(description) > 1 and schema.get("type") != "array":
        return value
    return [value]


_LINK_KEYS = {"href", "type", "rel", "title", "hreflang"}


def is_reference(value: Any, schema: dict[str, Any] | None = None) -> bool:
    """Whether an input value is a link (``{"href": ..., "type"?: ...}``), not an object input."""
    if not isinstance(value, dict) or not isinstance(value.get("href"), str):
        return False
    if not set(value) <= _LINK_KEYS:
        return False
    properties = (schema or {}).get("properties") or {}
    return "href" not in properties  # an object input that has an href of its own


def _unwrap(occurrence: Any, schema: dict[str, Any]) -> tuple[bool, Any]:
    """(check it?, the value to check) for one occurrence of an input."""
    if is_reference(occurrence, schema):
        return False, None  # a link: what it leads to is checked once read (references.py)
    if isinstance(occurrence, dict) and schema.get("type") != "object":
        if "href" in occurrence:
            return False, None  # a link: its content is fetched by the process
        if "bbox" in occurrence:
            return False, None
        if "value" in occurrence and set(occurrence) - {"value"} <= _QUALIFIERS:
            return True, occurrence["value"]
    return True, occurrence


def value_problems(name: str, value: Any, schema: dict[str, Any]) -> list[str]:
    """How one value of input ``name`` breaks its JSON schema (a resolved reference's, say)."""
    validator = _validator(json.dumps(schema, sort_keys=True, default=str))
    if validator is None:
        return []
    found = []
    for error in validator.iter_errors(value):
        where = "".join(f"[{part!r}]" for part in error.absolute_path)
        found.append(f"{where + ': ' if where else ''}{error.message[:300]}")
    return found


def _input_problems(name: str, value: Any, description: dict[str, Any]) -> list[str]:
    schema = description.get("schema") or {}
    occurrences = _occurrences(value, description, schema)
    problems = []
    low, high = int(description.get("minOccurs", 1)), _max_occurs(description)
    if not low <= len(occurrences) <= high:
        bound = "unbounded" if high == math.inf else int(high)
        problems.append(
            f"input '{name}': {len(occurrences)} values given, between {low} and {bound} allowed"
        )
    validator = _validator(json.dumps(schema, sort_keys=True))
    if validator is None:
        return problems
    for occurrence in occurrences:
        check, unwrapped = _unwrap(occurrence, schema)
        if not check:
            continue
        for error in validator.iter_errors(unwrapped):
            where = "".join(f"[{part!r}]" for part in error.absolute_path)
            problems.append(f"input '{name}'{where}: {error.message}")
    return problems


def check_execute_request(
    process_id: str,
    metadata: dict[str, Any],
    inputs: Any,
    requested_outputs: Any,
) -> None:
    """Raise :class:`InvalidInputs` listing every problem of an execute request.

    Args:
        process_id: the process, for the message.
        metadata: the process description (``processor.metadata``).
        inputs: the request's ``inputs``.
        requested_outputs: the request's ``outputs`` (may be None).
    """
    problems: list[str] = []
    described: dict[str, Any] = metadata.get("inputs") or {}
    if not isinstance(inputs, dict):
        problems.append("'inputs' must be a JSON object keyed by input id")
        inputs = {}
    for name in inputs:
        if name not in described:
            problems.append(f"unknown input '{name}'")
    for name, description in described.items():
        if name in inputs:
            problems.extend(_input_problems(name, inputs[name], description or {}))
        elif int((description or {}).get("minOccurs", 1)) > 0:
            problems.append(f"missing required input '{name}'")
    if requested_outputs is not None:
        declared = metadata.get("outputs") or {}
        if not isinstance(requested_outputs, dict):
            problems.append("'outputs' must be a JSON object keyed by output id")
        else:
            problems.extend(
                f"unknown output '{name}'" for name in requested_outputs if name not in declared
            )
    if problems:
        raise InvalidInputs(
            f"Invalid execute request for process '{process_id}': " + "; ".join(problems),
            problems=problems,
        )
