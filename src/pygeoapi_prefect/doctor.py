"""``pygeoapi-prefect doctor``: check a deployment and say how to fix what is wrong."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Check", "run_checks"]


@dataclass(frozen=True)
class Check:
    """One finding: what was checked, whether it passed, and what to do if not."""

    name: str
    ok: bool
    detail: str
    fix: str = ""


def _manager_block(config_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    from pygeoapi.util import yaml_load

    with config_path.open(encoding="utf-8") as handle:
        config = yaml_load(handle)
    manager = dict(config.get("server", {}).get("manager") or {})
    processes = {
        key: value
        for key, value in (config.get("resources") or {}).items()
        if value.get("type") == "process"
    }
    return manager, processes


def run_checks(config_path: Path) -> Iterator[Check]:
    """Check the config, the Prefect API, the result store and every process."""
    from pygeoapi_prefect.errors import ConfigError, PrefectManagerError
    from pygeoapi_prefect.manager import PrefectManager

    try:
        manager_def, processes = _manager_block(config_path)
    except (OSError, ValueError) as exc:
        yield Check("config", False, f"{config_path} cannot be read: {exc}", "check the path")
        return
    if manager_def.get("name") not in (
        "pygeoapi_prefect.manager.PrefectManager",
        "pygeoapi_prefect.PrefectManager",
    ):
        yield Check(
            "config",
            False,
            f"server.manager.name is {manager_def.get('name')!r}",
            "set server.manager.name: pygeoapi_prefect.manager.PrefectManager",
        )
        return
    try:
        manager = PrefectManager({**manager_def, "processes": processes})
    except ConfigError as exc:
        yield Check("config", False, str(exc), "fix the key named above")
        return
    yield Check("config", True, f"{config_path}: server.manager is valid")

    try:
        api = manager.api
        started = time.perf_counter()
        api.request("GET", "/health")
        version = api.request("GET", "/admin/version").json()
        elapsed = (time.perf_counter() - started) * 1000
        yield Check(
            "prefect", True, f"Prefect {version} answers at {api.api_url} ({elapsed:.0f} ms)"
        )
    except PrefectManagerError as exc:
        yield Check(
            "prefect",
            False,
            exc.message,
            "start a Prefect server (`prefect server start`, or `pygeoapi-prefect serve`) "
            "and set server.manager.connection or PREFECT_API_URL to its API URL",
        )

    store = manager.store
    probe = str(uuid.uuid4())
    try:
        store.write(probe, "application/json", {"doctor": True})
        store.read(probe)
        store.delete(probe)
        yield Check("results", True, f"result store {store.url} can be written, read, deleted")
    except PrefectManagerError as exc:
        yield Check(
            "results",
            False,
            exc.message,
            "check server.manager.results.url, its storage_options, and the credentials "
            "in the environment (for s3://, AWS_* variables or ~/.aws)",
        )

    for process_id in processes:
        try:
            processor = manager.get_processor(process_id)
            options = processor.metadata.get("jobControlOptions", [])
            yield Check(f"process {process_id}", True, f"loads ({', '.join(options)})")
        except Exception as exc:  # noqa: BLE001 - any failure to load is the finding
            yield Check(
                f"process {process_id}",
                False,
                f"cannot be loaded: {exc.__class__.__name__}: {exc}",
                f"check resources.{process_id}.processor (is its package installed?)",
            )
    manager.close()
