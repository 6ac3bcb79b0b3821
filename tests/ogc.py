"""Validation against the official OGC API - Processes 1.0 schemas (local copies)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

SCHEMAS = Path(__file__).parent / "data" / "ogc-schemas-part1-1.0" / "core" / "openapi" / "schemas"
BASE = "https://schemas.opengis.net/ogcapi/processes/part1/1.0/openapi/schemas/"


@cache
def _registry() -> Registry:
    resources = []
    for path in SCHEMAS.rglob("*.yaml"):
        uri = BASE + path.relative_to(SCHEMAS).as_posix()
        resources.append((uri, Resource.from_contents(yaml.safe_load(path.read_text()), DRAFT7)))
    return Registry().with_resources(resources)


def validate(document: Any, schema_name: str) -> None:
    """Raise if ``document`` does not match the named OGC schema (e.g. ``statusInfo``)."""
    validator = jsonschema.Draft7Validator(
        {"$ref": BASE + f"{schema_name}.yaml"},
        registry=_registry(),
        format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER,
    )
    errors = [e for e in validator.iter_errors(document) if not _known_ambiguity(e)]
    if errors:
        raise AssertionError(
            f"not a valid OGC {schema_name}: "
            + "; ".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)
        )


def _known_ambiguity(error: jsonschema.ValidationError) -> bool:
    # ogcapi-processes issue #350: a string matches both `type: string` and
    # binaryInputValue in inputValueNoObject's oneOf, which then fails every
    # oneOf around it. Tolerate exactly that: an error whose only cause, in
    # some branch, is this ambiguity.
    if error.validator == "oneOf" and isinstance(error.instance, str):
        if "is valid under each of" in error.message:
            return True
    if error.validator in ("oneOf", "anyOf") and error.context:
        branches: dict[Any, list[jsonschema.ValidationError]] = {}
        for sub in error.context:
            branches.setdefault(sub.relative_schema_path[0], []).append(sub)
        return any(all(_known_ambiguity(sub) for sub in subs) for subs in branches.values())
    return False
