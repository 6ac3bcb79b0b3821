"""MkDocs hooks: the configuration and CLI references, generated from the code.

``mkdocs.yml`` names this file under ``hooks:``. A page holding the marker
``<!-- generated: config -->`` gets the reference of every ``server.manager``
key, walked from the pydantic models of :mod:`pygeoapi_prefect.config`; one
holding ``<!-- generated: cli -->`` gets every command of the
``pygeoapi-prefect`` click group with its options and its ``--help`` text.
So the references cannot drift from the code.
"""

from __future__ import annotations

import json
import types
import typing
from typing import Any

import click
from pydantic import BaseModel
from pydantic.fields import FieldInfo

CONFIG_MARKER = "<!-- generated: config -->"
CLI_MARKER = "<!-- generated: cli -->"
_WIDTH = 88


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Fill in the generated references where a page asks for them."""
    if CONFIG_MARKER in markdown:
        markdown = markdown.replace(CONFIG_MARKER, config_reference())
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_reference())
    return markdown


# -- configuration ---------------------------------------------------------


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return " or ".join(_type_name(arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return "null"
    origin = typing.get_origin(annotation)
    if origin is list:
        (item,) = typing.get_args(annotation)
        return f"list of {_type_name(item)}"
    if origin is dict:
        return "mapping"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    return {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}.get(
        getattr(annotation, "__name__", str(annotation)), str(annotation)
    )


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
        if isinstance(value, BaseModel):
            return "the keys below"
    else:
        value = field.default
    if value is None:
        return "not set"
    return f"`{json.dumps(value)}`"


def _bounds(field: FieldInfo) -> str:
    words = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<", "min_length": "length ≥"}
    found = []
    for item in field.metadata:
        for attribute, word in words.items():
            value = getattr(item, attribute, None)
            if value is not None:
                found.append(f"{word} {value:g}" if isinstance(value, float) else f"{word} {value}")
    return ", ".join(found)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def config_sections(
    model: type[BaseModel], path: str
) -> list[tuple[str, str, list[tuple[str, FieldInfo]]]]:
    """(YAML path, model docstring, fields) of ``model`` and every model nested in it."""
    doc = (model.__doc__ or "").strip().split("\n\n")[0]
    fields = list(model.model_fields.items())
    sections = [(path, doc, fields)]
    for name, field in fields:
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            sections += config_sections(annotation, f"{path}.{name}")
    return sections


def config_reference() -> str:
    """A section per ``server.manager`` mapping, a heading per key (its full path)."""
    from pygeoapi_prefect.config import YAML_PREFIX, ManagerConfig

    out = []
    for path, doc, fields in config_sections(ManagerConfig, YAML_PREFIX):
        out += [f"## `{path}`", "", _cell(doc.replace("``", "`")), ""]
        for name, field in fields:
            facts = [_type_name(field.annotation), f"default: {_default(field)}"]
            if bounds := _bounds(field):
                facts.append(bounds)
            out += [
                f"### `{path}.{name}`",
                "",
                f"*{' · '.join(facts)}*",
                "",
                " ".join((field.description or "").split()),
                "",
            ]
    return "\n".join(out)


# -- command line ----------------------------------------------------------


def _param_row(param: click.Parameter) -> str:
    if isinstance(param, click.Option):
        names = ", ".join(f"`{name}`" for name in [*param.opts, *param.secondary_opts])
        default = "" if param.is_flag or param.default is None else f"`{param.default}`"
        if param.envvar:
            default += f" (env `{param.envvar}`)"
        kind = "flag" if param.is_flag else param.type.name
        text = param.help or ""
    else:
        names = f"`{(param.name or '').upper()}`"
        default = "required" if param.required else ""
        kind = f"argument ({param.type.name})"
        text = ""
    return f"| {names} | {kind} | {_cell(str(default))} | {_cell(text)} |"


def cli_reference() -> str:
    """A section per ``pygeoapi-prefect`` command: options, then its ``--help``."""
    from pygeoapi_prefect.cli.main import cli

    root = click.Context(
        cli,
        info_name="pygeoapi-prefect",
        terminal_width=_WIDTH,
        max_content_width=_WIDTH,
        **cli.context_settings,
    )
    out = [
        "## `pygeoapi-prefect`",
        "",
        "```text",
        cli.get_help(root),
        "```",
        "",
    ]
    for name in cli.list_commands(root):
        command = cli.get_command(root, name)
        assert command is not None
        if command.name != name:
            out += [
                f"## `pygeoapi-prefect {name}`",
                "",
                f"An alias of [`{command.name}`](#pygeoapi-prefect-{command.name}).",
                "",
            ]
            continue
        ctx = click.Context(
            command, info_name=name, parent=root, terminal_width=_WIDTH, max_content_width=_WIDTH
        )
        out += [f"## `pygeoapi-prefect {name}`", "", _cell(command.get_short_help_str(200)), ""]
        out += ["| option | type | default | meaning |", "|---|---|---|---|"]
        out += [_param_row(param) for param in command.get_params(ctx)]
        out += ["", "```text", command.get_help(ctx), "```", ""]
    return "\n".join(out)
