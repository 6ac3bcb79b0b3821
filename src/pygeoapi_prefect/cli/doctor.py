"""``pygeoapi-prefect doctor``: check a deployment and say how to fix what is wrong."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pygeoapi_prefect.manager import PrefectManager
    from pygeoapi_prefect.prefect.api import PrefectAPI

__all__ = ["Check", "run_checks"]

_MANAGER_NAMES = ("pygeoapi_prefect.manager.PrefectManager", "pygeoapi_prefect.PrefectManager")


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
    if not isinstance(config, dict):
        raise ValueError("it is not a YAML mapping")
    manager = dict((config.get("server") or {}).get("manager") or {})
    processes = {
        key: value
        for key, value in (config.get("resources") or {}).items()
        if isinstance(value, dict) and value.get("type") == "process"
    }
    return manager, processes


def run_checks(config_path: Path, pools: Sequence[str] = ()) -> Iterator[Check]:
    """Check the config, the Prefect API, work pools, the result store and every process.

    ``pools`` are checked besides those of the deployments the processes run on.
    """
    from pygeoapi_prefect.errors import ConfigError
    from pygeoapi_prefect.manager import PrefectManager

    if not config_path.is_file():
        yield Check(
            "config",
            False,
            f"{config_path} does not exist",
            "pass --config FILE or set PYGEOAPI_CONFIG to your pygeoapi config",
        )
        return
    try:
        manager_def, processes = _manager_block(config_path)
    except Exception as exc:  # noqa: BLE001 - unreadable or not YAML: the finding
        yield Check(
            "config",
            False,
            f"{config_path} cannot be read: {exc}",
            "check that the file is a readable pygeoapi config in YAML",
        )
        return
    if manager_def.get("name") not in _MANAGER_NAMES:
        yield Check(
            "config",
            False,
            f"server.manager.name is {manager_def.get('name')!r}",
            f"set server.manager.name: {_MANAGER_NAMES[0]}",
        )
        return
    try:
        manager = PrefectManager({**manager_def, "processes": processes})
    except ConfigError as exc:
        yield Check("config", False, str(exc), "fix the key named above")
        return
    yield Check("config", True, f"{config_path}: server.manager is valid")
    try:
        prefect = _check_prefect(manager)
        yield prefect
        if prefect.ok:
            yield from _check_pools(manager, processes, pools)
        yield _check_results(manager)
        yield from _check_processes(manager, processes)
    finally:
        manager.close()


def _check_prefect(manager: PrefectManager) -> Check:
    from pygeoapi_prefect.errors import PrefectAuthFailed, PrefectManagerError
    from pygeoapi_prefect.urls import without_credentials

    try:
        api = manager.api
        started = time.perf_counter()
        api.request("GET", "/health")
        # /health answers without credentials: this one needs them.
        version = api.request("GET", "/admin/version").json()
        elapsed = (time.perf_counter() - started) * 1000
    except PrefectAuthFailed as exc:
        return Check(
            "prefect",
            False,
            exc.message,
            "for a self-hosted server started with PREFECT_SERVER_API_AUTH_STRING, set "
            "PREFECT_API_AUTH_STRING to the same user:password; for Prefect Cloud, set "
            "PREFECT_API_KEY (in the environment of pygeoapi, its workers and this command)",
        )
    except PrefectManagerError as exc:
        return Check(
            "prefect",
            False,
            exc.message,
            "start a Prefect server (`prefect server start`, or `pygeoapi-prefect serve`) "
            "and set server.manager.connection or PREFECT_API_URL to its API URL "
            "(ending in /api)",
        )
    from pygeoapi_prefect.prefect.api import credentials_setting

    shown = without_credentials(api.api_url)
    setting = credentials_setting()
    sent = f", credentials from {setting}" if setting else ""
    return Check("prefect", True, f"Prefect {version} answers at {shown} ({elapsed:.0f} ms{sent})")


def _redeploy(process_id: str | None, name: str, published: bool) -> str:
    if process_id is None:
        return f"deploy {name} again with Prefect, into an existing work pool"
    publish = " --publish" if published else ""
    return (
        f"`pygeoapi-prefect deploy-process-as-flow {process_id} "
        f"--deployment-name {name.partition('/')[2]} --work-pool POOL{publish}`"
    )


def _deployments(
    manager: PrefectManager, processes: dict[str, Any]
) -> Iterator[tuple[str | None, str, dict[str, Any] | None, bool]]:
    # (process id, deployment name, the deployment or None if Prefect has
    # none, whether it is published rather than configured)
    from pygeoapi_prefect.jobs.runs import process_id_of

    api = manager.api
    for process_id, resource in processes.items():
        name = (resource.get("processor") or {}).get("deployment")
        if not name:
            continue
        flow_name, _, deployment = str(name).partition("/")
        response = api.request("GET", f"/deployments/name/{flow_name}/{deployment}", allow_404=True)
        found = None if response.status_code == 404 else response.json()
        yield process_id, str(name), found, False
    if manager.config.publish.enabled:
        for found in api.deployments_tagged(manager.config.publish.tag):
            name = f"{found['flow_name']}/{found['name']}"
            yield process_id_of(found.get("tags") or []), name, found, True


def _check_pools(
    manager: PrefectManager, processes: dict[str, Any], asked: Sequence[str]
) -> Iterator[Check]:
    from pygeoapi_prefect.cli.deploy import WARM_COMMAND
    from pygeoapi_prefect.errors import PrefectManagerError

    pools: dict[str, list[str]] = {pool: [] for pool in asked}
    warm: set[str] = set()
    try:
        for process_id, name, deployment, published in _deployments(manager, processes):
            if deployment is None:
                yield Check(
                    f"deployment {name}",
                    False,
                    f"process {process_id} runs on the Prefect deployment {name}, "
                    "which does not exist (its jobs answer 503)",
                    f"run {_redeploy(process_id, name, published)}",
                )
                continue
            pool = deployment.get("work_pool_name")
            if not pool:
                yield Check(
                    f"deployment {name}",
                    False,
                    f"deployment {name} has no work pool (was its pool deleted?), so no "
                    "worker takes its runs: they stay Scheduled and their jobs accepted",
                    "create the pool (`prefect work-pool create POOL --type process`) and "
                    f"deploy again: {_redeploy(process_id, name, published)}",
                )
                continue
            pools.setdefault(pool, []).append(name)
            if (deployment.get("job_variables") or {}).get("command") == WARM_COMMAND:
                warm.add(pool)
        for pool, names in pools.items():
            yield _check_pool(manager.api, pool, names, pool in warm)
    except PrefectManagerError as exc:
        yield Check(
            "pools", False, f"the work pools cannot be read: {exc.message}", "run doctor again"
        )


def _check_pool(api: PrefectAPI, pool: str, deployments: list[str], warm: bool) -> Check:
    name = f"pool {pool}"
    used_by = (
        f"used by {', '.join(sorted(deployments))}" if deployments else "asked for with --pool"
    )
    response = api.request("GET", f"/work_pools/{pool}", allow_404=True)
    if response.status_code == 404:
        return Check(
            name,
            False,
            f"work pool {pool} ({used_by}) does not exist: runs of these "
            "deployments stay Scheduled and their jobs accepted",
            f"create it with `prefect work-pool create {pool} --type process`, and start a "
            "worker for it",
        )
    found = response.json()
    if found.get("is_paused") or found.get("status") == "PAUSED":
        return Check(
            name,
            False,
            f"work pool {pool} ({used_by}) is paused: no worker takes its runs",
            f"resume it with `prefect work-pool resume {pool}`",
        )
    workers: list[dict[str, Any]] = api.request(
        "POST", f"/work_pools/{pool}/workers/filter", json={"limit": 200}
    ).json()
    online = [w for w in workers if w.get("status") == "ONLINE"]
    if not online:
        start = (
            f"`pygeoapi-prefect warm-worker --pool {pool}`"
            if warm
            else f"`prefect worker start --pool {pool}`"
        )
        seen = max((w.get("last_heartbeat_time") or "" for w in workers), default="")
        last = f" (last heartbeat {seen})" if seen else " (none ever connected)"
        return Check(
            name,
            False,
            f"work pool {pool} ({used_by}) has no online worker{last}: "
            "its runs stay Scheduled/Pending and their jobs accepted",
            f"start a worker where the processes' packages are installed: {start}",
        )
    return Check(
        name,
        True,
        f"{len(online)} online worker(s) ({', '.join(w['name'] for w in online)}), {used_by}",
    )


def _check_results(manager: PrefectManager) -> Check:
    from pygeoapi_prefect.errors import PrefectManagerError

    store = manager.store
    probe = str(uuid.uuid4())
    content = {"doctor": probe}
    try:
        store.write(probe, "application/json", content)
        _, back = store.read(probe)
        store.delete(probe)
        if back != content:
            raise ValueError(f"a probe written to {store.url} read back as {back!r}")
        if store.exists(probe):
            raise ValueError(f"a probe deleted from {store.url} is still there")
    except (PrefectManagerError, ValueError) as exc:
        message = exc.message if isinstance(exc, PrefectManagerError) else str(exc)
        if exc.__cause__ is not None:
            message += f": {exc.__cause__}"
        return Check(
            "results",
            False,
            f"{message} (the probe is written, read back and deleted as job {probe})",
            "check server.manager.results (url or block, storage_options), that the folder "
            "or bucket exists and is writable by this user, and the credentials in the "
            "environment (for s3://: AWS_* variables or ~/.aws)",
        )
    return Check("results", True, f"result store {store.url} can be written, read, deleted")


def _check_processes(manager: PrefectManager, processes: dict[str, Any]) -> Iterator[Check]:
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
