"""Outputs larger than memory (issue 13, item 4): a job streams to S3, a client downloads.

    .venv/bin/python benchmarks/large_outputs.py [--megabytes 2048] [--repeat 1]

Starts moto's S3 server (its own process), a Prefect server and pygeoapi
(PrefectManager, results on moto S3, werkzeug), then, in the same run:

1. *baseline*: s3fs ``put`` of a file of the same bytes, then ``get`` of it
   back to a file (the plain object-storage round trip);
2. *job*: an async job of ``large-output`` writes ``--megabytes`` MiB through
   :func:`pygeoapi_prefect.outputs.open`; the client asks for its results with
   ``transmissionMode: reference``, gets ``204`` and a presigned ``Link``, and
   downloads it with plain httpx (no credentials) to a file;
3. the same output streamed through pygeoapi (``GET /jobs/{id}/results/data``).

Prints the times, their ratio (target: job + presigned download at most
1.2x put + get) and the peak RSS (VmHWM) of the pygeoapi server process and
of the local worker process that ran the job (target: each under 150 MiB).
Needs about 2x ``--megabytes`` of free space in the temporary folder.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from core import ROOT, serve_command  # noqa: E402

from pygeoapi_prefect.prefect.server import PrefectServer, free_port  # noqa: E402

MIB = 1024 * 1024
ENV = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}
BUCKET = "bench"
LINK = re.compile(r"<([^>]*)>")


def peak_mib(pid: int) -> float:
    """Peak resident set size (VmHWM) of a process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / MIB
    raise RuntimeError(f"no VmHWM for process {pid}")


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return found


def job_workers(server_pid: int) -> list[int]:
    """The local pool's worker processes (spawned: their command line names multiprocessing)."""
    found = []
    for pid in children(server_pid):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if b"multiprocessing" in cmdline and b"resource_tracker" not in cmdline:
            found.append(pid)
    return found


def wait_http(url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer")


def download(url: str, target: Path, **kwargs: object) -> int:
    size = 0
    with httpx.stream("GET", url, timeout=600, **kwargs) as answer:  # type: ignore[arg-type]
        answer.raise_for_status()
        with target.open("wb") as handle:
            for chunk in answer.iter_bytes(MIB):
                handle.write(chunk)
                size += len(chunk)
    return size


def baseline(fs: object, folder: Path, megabytes: int) -> tuple[float, float]:
    source = folder / "source.bin"
    block = bytes(range(256)) * 4096
    with source.open("wb") as handle:
        for _ in range(megabytes):
            handle.write(block)
    started = time.perf_counter()
    fs.put(str(source), f"{BUCKET}/baseline.bin")  # type: ignore[attr-defined]
    put = time.perf_counter() - started
    source.unlink()
    started = time.perf_counter()
    fs.get(f"{BUCKET}/baseline.bin", str(folder / "baseline-back.bin"))  # type: ignore[attr-defined]
    get = time.perf_counter() - started
    (folder / "baseline-back.bin").unlink()
    fs.rm(f"{BUCKET}/baseline.bin")  # type: ignore[attr-defined]
    return put, get


def serve_one_process(
    folder: Path,
    port: int,
    prefect_api_url: str,
    results: dict[str, Any],
    process: tuple[str, str],
    app: str = "pygeoapi_prefect.flask_app",
) -> subprocess.Popen[bytes]:
    """Serve one benchmark process (id, processor class) with PrefectManager on werkzeug.

    The config is example-config.yml's, logging at ERROR, one local job at a
    time, results in ``results``; the server's log goes to ``folder/server.log``.
    """
    config = yaml.safe_load((ROOT / "example-config.yml").read_text())
    config["server"]["bind"] = {"host": "127.0.0.1", "port": port}
    config["server"]["url"] = f"http://127.0.0.1:{port}"
    config["logging"] = {"level": "ERROR"}
    config["server"]["manager"] = {
        "name": "pygeoapi_prefect.manager.PrefectManager",
        "connection": prefect_api_url,
        "results": results,
        "local": {"max_workers": 1},
    }
    process_id, processor = process
    config["resources"] = {process_id: {"type": "process", "processor": {"name": processor}}}
    config_path = folder / "config.yml"
    config_path.write_text(yaml.safe_dump(config))
    from pygeoapi_prefect.cli.main import write_openapi

    write_openapi(config_path, folder / "openapi.yml")
    env = os.environ | {
        "PYGEOAPI_CONFIG": str(config_path),
        "PYGEOAPI_OPENAPI": str(folder / "openapi.yml"),
        "PYTHONPATH": str(HERE),
        "PREFECT_API_URL": prefect_api_url,
    }
    return subprocess.Popen(
        serve_command(app, port, "werkzeug", 1),
        env=env,
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=(folder / "server.log").open("wb"),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--megabytes", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--via-megabytes",
        type=int,
        default=None,
        help="size of the output streamed through pygeoapi (default --megabytes; moto "
        "answers each ranged GET in time proportional to the object, so keep it small)",
    )
    args = parser.parse_args()
    free = shutil.disk_usage(tempfile.gettempdir()).free / MIB
    if free < 2.2 * args.megabytes:
        sys.exit(f"{free:.0f} MiB free in {tempfile.gettempdir()}: too little for the run")
    os.environ.update(ENV)
    with tempfile.TemporaryDirectory(prefix="bench-large-") as tmp:
        folder = Path(tmp)
        s3_port = free_port()
        moto = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(s3_port)],
            stdout=subprocess.DEVNULL,
            stderr=(Path(tempfile.gettempdir()) / "bench-large-moto.log").open("wb"),
        )
        endpoint = f"http://127.0.0.1:{s3_port}"
        prefect = PrefectServer(folder / "prefect-home", port=free_port())
        server = None
        try:
            wait_http(endpoint)
            import s3fs

            # moto completes a multipart upload slowly (it joins the parts in
            # memory): botocore's 60 s read timeout would retry it and fail.
            options = {
                "client_kwargs": {"endpoint_url": endpoint},
                "config_kwargs": {"read_timeout": 1800},
            }
            fs = s3fs.S3FileSystem(**options)
            fs.mkdir(BUCKET)
            prefect.start()
            port = free_port()
            results = {"url": f"s3://{BUCKET}/results", "storage_options": options}
            server = serve_one_process(
                folder,
                port,
                prefect.api_url,
                results,
                ("large-output", "large_output_process.LargeOutput"),
            )
            url = f"http://127.0.0.1:{port}"
            wait_http(f"{url}/processes", 120)
            client = httpx.Client(base_url=url, timeout=600)
            body = {
                "inputs": {"megabytes": 1},
                "outputs": {"data": {"transmissionMode": "reference"}},
                "response": "raw",
            }

            def job(megabytes: int) -> tuple[str, float]:
                started = time.perf_counter()
                submitted = client.post(
                    "/processes/large-output/execution",
                    json={**body, "inputs": {"megabytes": megabytes}},
                    headers={"Prefer": "respond-async"},
                )
                submitted.raise_for_status()
                job_id = submitted.json()["jobID"]
                while True:
                    status = client.get(f"/jobs/{job_id}", params={"f": "json"}).json()
                    if status["status"] in ("successful", "failed", "dismissed"):
                        break
                    time.sleep(0.2)
                if status["status"] != "successful":
                    raise RuntimeError(f"job {job_id}: {status}")
                return job_id, time.perf_counter() - started

            job(1)  # warm-up: the worker process, imports, connections
            client.get(f"/jobs/{job(1)[0]}/results/data").raise_for_status()
            start_server = peak_mib(server.pid)
            start_worker = max(peak_mib(pid) for pid in job_workers(server.pid))
            rows = []
            for _ in range(args.repeat):
                put, get = baseline(fs, folder, args.megabytes)
                job_id, written = job(args.megabytes)
                started = time.perf_counter()
                answer = client.get(f"/jobs/{job_id}/results")
                assert answer.status_code == 204, answer.text
                href = LINK.match(answer.headers["link"]).group(1)  # type: ignore[union-attr]
                size = download(href, folder / "presigned.bin")
                fetched = time.perf_counter() - started
                assert size == args.megabytes * MIB, size
                (folder / "presigned.bin").unlink()
                via_megabytes = args.via_megabytes or args.megabytes
                if via_megabytes != args.megabytes:
                    job_id, _ = job(via_megabytes)
                started = time.perf_counter()
                size = download(f"{url}/jobs/{job_id}/results/data", folder / "via.bin")
                via = time.perf_counter() - started
                assert size == via_megabytes * MIB, size
                (folder / "via.bin").unlink()
                workers = job_workers(server.pid)
                rows.append(
                    {
                        "put": put,
                        "get": get,
                        "job": written,
                        "fetch": fetched,
                        "via": via,
                        "server": peak_mib(server.pid),
                        "worker": max(peak_mib(pid) for pid in workers),
                    }
                )
            for row in rows:
                ratio = (row["job"] + row["fetch"]) / (row["put"] + row["get"])
                print(f"output: {args.megabytes} MiB, moto S3 on loopback")
                print(f"s3fs put + get: {row['put']:.1f} + {row['get']:.1f} s")
                print(
                    f"job (submit to successful) + presigned download: {row['job']:.1f} + "
                    f"{row['fetch']:.1f} s -> {ratio:.2f}x (target <= 1.2x)"
                )
                print(f"{via_megabytes} MiB streamed through pygeoapi: {row['via']:.1f} s")
                print(
                    f"peak RSS pygeoapi server: {row['server']:.1f} MiB (target < 150); "
                    f"{start_server:.1f} MiB after a 1 MiB job"
                )
                print(
                    f"peak RSS job's worker: {row['worker']:.1f} MiB (target < 150); "
                    f"{start_worker:.1f} MiB after a 1 MiB job"
                )
        finally:
            if server is not None:
                server.terminate()
                server.wait(30)
            prefect.stop()
            moto.terminate()
            moto.wait(30)


if __name__ == "__main__":
    main()
