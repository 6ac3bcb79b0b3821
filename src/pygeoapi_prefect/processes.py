"""Prefect flows published as OGC processes.

Point a pygeoapi process resource at any Prefect flow; its OGC description is
derived from the flow (name, version, docstring, and the JSON schema Prefect
builds from the signature and type hints), and anything in ``metadata``
overrides it::

    resources:
      hi-prefect-world:
        type: process
        processor:
          name: pygeoapi_prefect.processes.FlowProcessor
          flow: pygeoapi_prefect.examples.hi_prefect_world:hi_prefect_world
          metadata:                 # optional, merged over the derived description
            title: Hi, Prefect world

Run through PrefectManager, each job is a flow run like any other; locally the
flow's function runs in the job's worker process (or in the request, sync).
"""

from __future__ import annotations

import copy
import importlib
import inspect
import json
import re
from typing import TYPE_CHECKING, Any

from pygeoapi.process.base import BaseProcessor

if TYPE_CHECKING:
    from prefect import Flow

__all__ = [
    "DeploymentProcessor",
    "FlowProcessor",
    "describe_deployment",
    "describe_flow",
    "inputs_from_schema",
    "load_flow",
    "package_result",
]

OUTPUT_ID = "result"
#: Google-style docstring sections: the description ends where they begin.
_SECTION = re.compile(r"^\s*(Args|Arguments|Parameters|Returns|Raises|Yields|Examples?):\s*$")


def load_flow(reference: str) -> Flow[..., Any]:
    """Import ``package.module:attribute`` and check that it is a Prefect flow.

    Raises:
        ValueError: the reference is malformed or names something else.
    """
    from prefect import Flow

    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"flow {reference!r} must be written 'package.module:flow_function'")
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"flow {reference!r} cannot be imported: {exc}") from exc
    if not isinstance(found, Flow):
        raise ValueError(f"{reference!r} is not a Prefect flow (decorate it with @flow)")
    return found


def _split_docstring(text: str, fallback: str) -> tuple[str, str]:
    """(title, description) of a docstring: its first paragraph, and all before its sections."""
    lines = []
    for line in inspect.cleandoc(text).splitlines():
        if _SECTION.match(line):
            break
        lines.append(line)
    paragraphs = [p.strip() for p in "\n".join(lines).split("\n\n") if p.strip()]
    title = paragraphs[0].replace("\n", " ") if paragraphs else fallback
    description = " ".join(p.replace("\n", " ") for p in paragraphs) or title
    return title, description


def _with_definitions(schema: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    # Prefect puts nested models in a shared "definitions"; each input's schema
    # must carry the ones it refers to, to stand alone.
    if definitions and "#/definitions/" in json.dumps(schema):
        return {**schema, "definitions": definitions}
    return schema


def _output_schema(flow: Flow[..., Any]) -> dict[str, Any]:
    annotation = inspect.signature(flow.fn).return_annotation
    if annotation is inspect.Signature.empty:
        return {}
    from pydantic import TypeAdapter

    try:
        return TypeAdapter(annotation).json_schema()
    except Exception:  # noqa: BLE001 - an exotic annotation just gives no schema
        return {}


def inputs_from_schema(parameters: dict[str, Any]) -> dict[str, Any]:
    """OGC input descriptions from a Prefect parameter schema.

    Parameters named ``pygeoapi_*`` (set by pygeoapi itself) are left out.
    """
    definitions = parameters.get("definitions") or {}
    required = set(parameters.get("required") or [])
    inputs = {}
    for name, prefect_schema in (parameters.get("properties") or {}).items():
        if name.startswith("pygeoapi_"):
            continue
        schema = {
            k: v for k, v in prefect_schema.items() if k not in ("position", "title", "description")
        }
        inputs[name] = {
            "title": prefect_schema.get("title") or name,
            "description": prefect_schema.get("description", ""),
            "schema": _with_definitions(schema, definitions),
            "minOccurs": 1 if name in required else 0,
            "maxOccurs": 1,
        }
    return inputs


def describe_flow(flow: Flow[..., Any], process_id: str | None = None) -> dict[str, Any]:
    """The OGC process description of a flow."""
    title, description = _split_docstring(
        flow.description or inspect.getdoc(flow.fn) or "", flow.name
    )
    inputs = inputs_from_schema(flow.parameters.model_dump())
    return {
        "version": flow.version or "0.1.0",
        "id": process_id or flow.name,
        "title": title,
        "description": description,
        "jobControlOptions": ["sync-execute", "async-execute"],
        "keywords": ["prefect"],
        "links": [],
        "inputs": inputs,
        "outputs": {
            OUTPUT_ID: {
                "title": "Result",
                "description": f"What the flow {flow.name!r} returns",
                "schema": _output_schema(flow),
            }
        },
    }


def _merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def package_result(value: Any) -> tuple[str, Any]:
    """(media type, pygeoapi output) for what a flow returned."""
    from pydantic import BaseModel

    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, bytes):
        return "application/octet-stream", value
    return "application/json", {"id": OUTPUT_ID, "value": value}


class FlowProcessor(BaseProcessor):  # type: ignore[misc]
    """A pygeoapi processor that runs a Prefect flow.

    Args:
        processor_def: pygeoapi's processor block: ``name`` (this class),
            ``flow`` (``package.module:flow_function``) and optionally
            ``metadata`` (merged over the derived OGC description).
    """

    def __init__(self, processor_def: dict[str, Any]) -> None:
        if "flow" not in processor_def:
            raise ValueError(
                "a FlowProcessor needs 'flow: package.module:flow_function' in its processor block"
            )
        self.flow = load_flow(processor_def["flow"])
        metadata = _merged(describe_flow(self.flow), processor_def.get("metadata") or {})
        super().__init__(processor_def, metadata)
        self.job_id: str | None = None

    def set_job_id(self, job_id: str) -> None:
        """Keep the job id: a flow may want it (e.g. for file names)."""
        self.job_id = job_id

    def execute(self, data: dict[str, Any], outputs: Any = None) -> tuple[str, Any]:
        """Call the flow's function with the inputs; its return value is the output."""
        return package_result(self.flow.fn(**data))

    def __repr__(self) -> str:
        return f"<FlowProcessor> {self.flow.name}"


def describe_deployment(deployment: dict[str, Any], process_id: str) -> dict[str, Any]:
    """The OGC process description of a Prefect deployment (REST API document)."""
    title, description = _split_docstring(deployment.get("description") or "", process_id)
    return {
        "version": deployment.get("version") or "0.1.0",
        "id": process_id,
        "title": title,
        "description": description,
        "jobControlOptions": ["sync-execute", "async-execute"],
        "keywords": ["prefect", "deployment"],
        "links": [],
        "inputs": inputs_from_schema(deployment.get("parameter_openapi_schema") or {}),
        "outputs": {OUTPUT_ID: {"title": "Result", "schema": {}}},
    }


class DeploymentProcessor(BaseProcessor):  # type: ignore[misc]
    """A Prefect deployment published as a process (``publish`` in the manager config).

    Its jobs always run on the deployment; the description comes from the
    deployment's parameter schema.

    Args:
        processor_def: ``deployment`` (``flow/deployment``), ``metadata``
            (the OGC description) and ``stores_results`` (whether the
            deployment was made by ``deploy-process-as-flow``, whose flows
            write to the result store).
    """

    def __init__(self, processor_def: dict[str, Any]) -> None:
        self.stores_results = bool(processor_def.get("stores_results"))
        metadata = dict(processor_def["metadata"])
        if not self.stores_results:
            # Its flow writes no results: a sync answer would have nothing to return.
            metadata["jobControlOptions"] = ["async-execute"]
        super().__init__(processor_def, metadata)

    def execute(self, data: dict[str, Any], outputs: Any = None) -> tuple[str, Any]:
        """Never called: the manager runs these jobs on their deployment."""
        raise RuntimeError("a published deployment runs on its Prefect workers only")
