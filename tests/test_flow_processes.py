"""Prefect flows published as OGC processes (FlowProcessor)."""

from __future__ import annotations

import json
from typing import Literal

import pytest
from ogc import validate
from prefect import flow
from pydantic import BaseModel

from pygeoapi_prefect.examples.hi_prefect_world import hi_prefect_world
from pygeoapi_prefect.processes import FlowProcessor, describe_flow, load_flow


class Area(BaseModel):
    west: float
    south: float
    east: float
    north: float


@flow(name="clip")
def clip(area: Area, band: Literal["red", "nir"] = "red", scale: float = 1.0) -> list[float]:
    """Clip an image.

    Args:
        area: Where to clip.
        band: Which band.
    """
    return [area.west * scale, area.north * scale]


def test_description_from_signature_and_docstring():
    description = describe_flow(hi_prefect_world, "hi-prefect-world")
    validate({**description, "links": []}, "process")
    assert description["title"] == "Say hi from Prefect."
    assert "published as an OGC API process" in description["description"]
    assert description["version"] == "1.0.0"
    assert description["inputs"]["name"]["minOccurs"] == 1
    assert description["inputs"]["name"]["schema"] == {"type": "string"}
    assert description["inputs"]["name"]["description"] == "Who to greet."
    assert description["inputs"]["message"]["minOccurs"] == 0
    assert description["inputs"]["message"]["schema"] == {"type": "string", "default": ""}
    assert description["outputs"]["result"]["schema"] == {"type": "string"}


def test_models_enums_and_return_types():
    description = describe_flow(clip)
    validate({**description, "links": []}, "process")
    area = description["inputs"]["area"]["schema"]
    assert "definitions" in area and "Area" in area["definitions"]
    assert description["inputs"]["band"]["schema"]["enum"] == ["red", "nir"]
    assert description["outputs"]["result"]["schema"] == {
        "type": "array",
        "items": {"type": "number"},
    }


def test_processor_runs_the_flow_function_and_config_overrides():
    processor = FlowProcessor(
        {
            "name": "pygeoapi_prefect.processes.FlowProcessor",
            "flow": "pygeoapi_prefect.examples.hi_prefect_world:hi_prefect_world",
            "metadata": {"title": "Overridden", "inputs": {"name": {"title": "Your name"}}},
        }
    )
    assert processor.metadata["title"] == "Overridden"
    assert processor.metadata["inputs"]["name"]["title"] == "Your name"
    assert processor.metadata["inputs"]["name"]["schema"] == {"type": "string"}
    assert processor.execute({"name": "you"}) == (
        "application/json",
        {"id": "result", "value": "Hi from Prefect, you!"},
    )


@pytest.mark.parametrize(
    ("reference", "fragment"),
    [
        ("no-colon", "must be written 'package.module:flow_function'"),
        ("no.such.module:f", "cannot be imported"),
        ("pygeoapi_prefect.processes:describe_flow", "is not a Prefect flow"),
    ],
)
def test_bad_flow_references(reference, fragment):
    with pytest.raises(ValueError, match=fragment):
        load_flow(reference)


def test_hi_prefect_world_through_pygeoapi(pygeoapi, prefect_api):
    described = pygeoapi.client.get("/processes/hi-prefect-world", params={"f": "json"}).json()
    validate(described, "process")
    assert described["title"] == "Hi, Prefect world"
    assert set(described["inputs"]) == {"name", "message"}

    sync = pygeoapi.execute("hi-prefect-world", {"name": "Frankie", "message": "Yo"})
    assert sync.status_code == 200
    assert sync.json() == {"id": "result", "value": "Hi from Prefect, Frankie! Yo"}

    job_id = pygeoapi.execute(
        "hi-prefect-world", {"name": "Async"}, asynchronous=True, response="document"
    ).json()["jobID"]
    pygeoapi.wait_for(job_id, "successful")
    results = pygeoapi.client.get(f"/jobs/{job_id}/results", params={"f": "json"}).json()
    assert results == {"result": "Hi from Prefect, Async!"}
    run = prefect_api.read_flow_run(job_id)
    assert "pygeoapi.process:hi-prefect-world" in run["tags"]

    bad = pygeoapi.execute("hi-prefect-world", {"message": "no name"})
    assert bad.status_code == 400
    assert "missing required input 'name'" in bad.json()["description"]


def test_deployed_wrapper_keeps_string_annotations_and_async_flows(tmp_path):
    import asyncio

    from flows_with_string_annotations import async_width, width

    from pygeoapi_prefect.execution.deployed import job_flow

    wrapped = job_flow(width, process_id="width", results_url=tmp_path.as_uri())
    schema = wrapped.parameters.model_dump()
    assert "Box" in json.dumps(schema)
    assert {"box", "scale", "pygeoapi_response", "pygeoapi_subscriber"} <= set(schema["properties"])
    wrapped.validate_parameters({"box": {"west": 0, "east": 2}})

    wrapped_async = job_flow(async_width, process_id="async-width", results_url=tmp_path.as_uri())
    assert wrapped_async.isasync
    assert asyncio.iscoroutinefunction(wrapped_async.fn)
