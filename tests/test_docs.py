"""The docs site's generated references, and what they are generated from."""

from __future__ import annotations

import importlib.util

import click
from click.testing import CliRunner
from conftest import ROOT
from pydantic import BaseModel

from pygeoapi_prefect.cli.main import cli
from pygeoapi_prefect.config import YAML_PREFIX, ManagerConfig


def load_hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def all_fields(model: type[BaseModel], path: str):
    for name, field in model.model_fields.items():
        yield f"{path}.{name}", field
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            yield from all_fields(field.annotation, f"{path}.{name}")


def commands():
    ctx = click.Context(cli, info_name="pygeoapi-prefect")
    return {name: cli.get_command(ctx, name) for name in cli.list_commands(ctx)}


def test_every_config_field_has_a_description():
    fields = dict(all_fields(ManagerConfig, YAML_PREFIX))
    assert "server.manager.local.max_workers" in fields
    missing = [key for key, field in fields.items() if not (field.description or "").strip()]
    assert missing == []


def test_config_reference_lists_every_key_with_its_default_and_description():
    reference = load_hooks().config_reference()
    for key, field in all_fields(ManagerConfig, YAML_PREFIX):
        section = reference.split(f"\n### `{key}`\n", 1)[1].split("\n#", 1)[0]
        assert " ".join(field.description.split()) in section
    assert "### `server.manager.local.max_workers`\n\n*integer · default: `32` · ≥ 1, ≤ 256*" in (
        reference
    )
    assert "### `server.manager.name`\n\n*string · default: required*" in reference


def test_every_command_help_has_examples():
    found = commands()
    assert {"serve", "openapi", "deploy-process-as-flow", "warm-worker", "doctor"} <= set(found)
    for name in ["", *found]:
        result = CliRunner().invoke(cli, [*name.split(), "--help"])
        assert result.exit_code == 0, result.output
        lines = [line.strip() for line in result.output.splitlines()]
        assert "Examples:" in lines, f"{name or 'the group'}: no Examples section"
        after = lines[lines.index("Examples:") + 1 :]
        assert after and "pygeoapi-prefect " in after[0], result.output


def test_cli_reference_has_every_command_option_and_help_text():
    reference = load_hooks().cli_reference()
    for name, command in commands().items():
        assert f"## `pygeoapi-prefect {name}`" in reference
        if command.name != name:
            assert f"An alias of [`{command.name}`]" in reference
            continue
        for param in command.params:
            for option in getattr(param, "opts", []):
                if option.startswith("-"):
                    assert f"`{option}`" in reference, (name, option)
        assert f"Usage: pygeoapi-prefect {name} [OPTIONS]" in reference
    assert "--storage-block-name" in reference
