"""pygeoapi under a real gunicorn, as operators run it (several workers, recycling, restarts)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from conftest import Pygeoapi, pygeoapi_config, server_env, wait_serving

from pygeoapi_prefect.cli.main import write_openapi
from pygeoapi_prefect.prefect.server import free_port


def write_config(tmp: Path, port: int, **config: Any) -> Path:
    """A pygeoapi config (conftest's) for ``port`` in ``tmp``, with its OpenAPI document."""
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "pygeoapi-config.yml"
    path.write_text(yaml.safe_dump(pygeoapi_config(port, tmp / "results", **config)))
    write_openapi(path, tmp / "pygeoapi-openapi.yml")
    return path


def start_gunicorn(
    tmp: Path,
    prefect_api_url: str,
    *,
    port: int | None = None,
    workers: int = 3,
    extra: tuple[str, ...] = (),
    app: str = "pygeoapi_prefect.flask_app:APP",
    timeout: float = 90,
    **config: Any,
) -> Pygeoapi:
    """Serve a config from ``tmp`` with gunicorn (gthread workers); reuses it if written."""
    port = port or free_port()
    config_path = tmp / "pygeoapi-config.yml"
    if not config_path.exists():
        write_config(tmp, port, **config)
    env = server_env(prefect_api_url, tmp / "prefect-home")
    env["PYGEOAPI_CONFIG"] = str(config_path)
    env["PYGEOAPI_OPENAPI"] = str(tmp / "pygeoapi-openapi.yml")
    log_path = tmp / f"gunicorn-{len(list(tmp.glob('gunicorn-*.log')))}.log"
    command = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}"]
    command += ["--workers", str(workers), "--worker-class", "gthread", "--threads", "4"]
    command += ["--graceful-timeout", "30", *extra, app]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=tmp,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    server = Pygeoapi(f"http://127.0.0.1:{port}", config_path, tmp / "results", process, log_path)
    try:
        wait_serving(process, server.base_url, log_path, timeout)
    except RuntimeError:
        server.stop()
        raise
    return server
