"""The package's layout: who may import whom, no import cycles, a thin manager.

The table is the one in docs/architecture.md ("The house"); a change to
either must change both.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "pygeoapi_prefect"
BASE = {"errors", "urls", "config", "credentials", "destinations", "metrics"}
#: Each part of the package, and the parts it may import (itself always).
MAY_IMPORT: dict[str, set[str]] = {
    "errors": set(),
    "urls": set(),
    "config": {"errors", "urls"},
    "metrics": {"errors"},
    "credentials": set(),
    "destinations": {"errors", "urls", "config"},
    "processes": set(),
    "warm_client": set(),
    "examples": {"progress"},
    "prefect": BASE,
    "jobs": BASE | {"prefect", "processes"},
    "events": BASE | {"prefect", "jobs"},
    "progress": BASE | {"prefect", "jobs", "events"},
    "outputs": BASE | {"jobs"},
    "execution": BASE | {"prefect", "jobs", "processes", "progress", "events", "outputs"},
    "manager": BASE | {"prefect", "jobs", "execution"},
    "deployed": {"execution"},
    "web": BASE | {"prefect", "jobs", "execution", "manager", "processes"},
    "flask_app": {"web"},
    "starlette_app": {"web"},
    "cli": BASE
    | {
        "prefect",
        "jobs",
        "execution",
        "manager",
        "processes",
        "web",
        "warm_client",
        "events",
        "__init__",
    },
    "__init__": {"manager", "progress"},
}


def _part(module: str) -> str:
    # pygeoapi_prefect.execution.engine -> execution; pygeoapi_prefect -> __init__
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(every pygeoapi_prefect module imported, those imported at module level)."""
    tree = ast.parse(path.read_text())
    everywhere: set[str] = set()
    top: set[str] = set()

    def visit(node: ast.AST, at_top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue  # annotations only: no import at run time
            found: list[str] = []
            if isinstance(child, ast.Import):
                found = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found = [child.module] + [f"{child.module}.{a.name}" for a in child.names]
            found = [m for m in found if m.split(".")[0] == "pygeoapi_prefect"]
            everywhere.update(found)
            if at_top:
                top.update(found)
            nested = at_top and not isinstance(
                child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
            )
            visit(child, nested)

    visit(tree, True)
    return everywhere, top


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(relative.parts).removesuffix(".__init__")
        found[name] = path
    return found


def test_every_part_imports_only_what_it_may():
    modules = _modules()
    problems = []
    for name, path in sorted(modules.items()):
        part = _part(name)
        assert part in MAY_IMPORT, f"{name}: a part missing from the table"
        for imported in sorted(_imports(path)[0]):
            target = imported if imported in modules else imported.rsplit(".", 1)[0]
            if target not in modules:
                continue
            other = _part(target)
            if other != part and other not in MAY_IMPORT[part]:
                problems.append(f"{name} imports {imported} ({part} -> {other})")
    assert not problems, "\n".join(problems)


def test_no_import_cycles_at_module_level():
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for imported in _imports(path)[1]:
            target = imported if imported in modules else imported.rsplit(".", 1)[0]
            if target in modules and target != name and not name.startswith(target + "."):
                targets.add(target)
        graph[name] = targets
    graphlib.TopologicalSorter(graph).prepare()  # CycleError names the cycle


def test_the_manager_is_a_thin_adapter():
    lines = (PACKAGE / "manager.py").read_text().splitlines()
    assert len(lines) < 260, len(lines)
