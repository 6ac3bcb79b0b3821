"""Raw answers of several large outputs: ``multipart/related`` streamed out of the result store.

    .venv/bin/python benchmarks/multipart.py [--megabytes 512]

Starts a Prefect server and pygeoapi (PrefectManager, results in a folder,
werkzeug, one local worker process) serving ``two-large-outputs``, a process
that writes two outputs of ``--megabytes`` MiB each through
:func:`pygeoapi_prefect.outputs.open`, and asks for them ``"response":
"raw"``, by value: a sync execution, and the results of an async job. The
client reads each answer as a stream and checks its size. Prints the time of
each and the peak RSS (VmHWM) of the pygeoapi server process, also read
after 1 MiB answers (what the process holds before any large one).

``--app pygeoapi.flask_app`` serves pygeoapi's own Flask app with the same
manager instead of ours (sync only): it cannot stream an execution's
answer, so the manager hands it the body joined in memory, the comparison.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from large_outputs import peak_mib, serve_one_process, wait_http  # noqa: E402

from pygeoapi_prefect.prefect.server import PrefectServer, free_port  # noqa: E402

MIB = 1024 * 1024


def read(client: httpx.Client, method: str, path: str, **kwargs: object) -> tuple[int, float]:
    """(bytes, seconds) of an answer read as a stream, a MiB at a time."""
    started = time.perf_counter()
    size = 0
    with client.stream(method, path, **kwargs) as answer:  # type: ignore[arg-type]
        answer.raise_for_status()
        assert answer.headers["content-type"].startswith("multipart/related"), answer.headers
        for chunk in answer.iter_bytes(MIB):
            size += len(chunk)
    return size, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--megabytes", type=int, default=512)
    parser.add_argument("--app", default="pygeoapi_prefect.flask_app")
    args = parser.parse_args()
    ours = args.app == "pygeoapi_prefect.flask_app"
    with tempfile.TemporaryDirectory(prefix="bench-multipart-") as tmp:
        folder = Path(tmp)
        prefect = PrefectServer(folder / "prefect-home", port=free_port())
        server = None
        try:
            prefect.start()
            port = free_port()
            server = serve_one_process(
                folder,
                port,
                prefect.api_url,
                {"url": str(folder / "results")},
                ("two-large-outputs", "large_output_process.TwoLargeOutputs"),
                app=args.app,
            )
            url = f"http://127.0.0.1:{port}"
            wait_http(f"{url}/processes", 120)
            client = httpx.Client(base_url=url, timeout=1800)
            execution = "/processes/two-large-outputs/execution"

            def sync(megabytes: int) -> tuple[int, float]:
                body = {"inputs": {"megabytes": megabytes}, "response": "raw"}
                return read(client, "POST", execution, json=body)

            def async_results(megabytes: int) -> tuple[int, float, float]:
                started = time.perf_counter()
                body = {"inputs": {"megabytes": megabytes}, "response": "raw"}
                submitted = client.post(execution, json=body, headers={"Prefer": "respond-async"})
                submitted.raise_for_status()
                job_id = submitted.json()["jobID"]
                while client.get(f"/jobs/{job_id}", params={"f": "json"}).json()["status"] in (
                    "accepted",
                    "running",
                ):
                    time.sleep(0.2)
                ran = time.perf_counter() - started
                size, seconds = read(client, "GET", f"/jobs/{job_id}/results")
                return size, ran, seconds

            sync(1)  # warm-up: imports, connections, the first job's record
            if ours:
                async_results(1)
            before = peak_mib(server.pid)
            size, took = sync(args.megabytes)
            assert size > 2 * args.megabytes * MIB, size
            after_sync = peak_mib(server.pid)
            print(f"app: {args.app}; two outputs of {args.megabytes} MiB each, raw, by value")
            print(f"peak RSS pygeoapi server after 1 MiB answers: {before:.1f} MiB")
            print(
                f"sync execution, multipart/related of {size / MIB:.1f} MiB: {took:.1f} s; "
                f"peak RSS {after_sync:.1f} MiB (+{after_sync - before:.1f})"
            )
            if ours:
                size, ran, took = async_results(args.megabytes)
                assert size > 2 * args.megabytes * MIB, size
                after_async = peak_mib(server.pid)
                print(
                    f"async job {ran:.1f} s, its results, multipart/related of "
                    f"{size / MIB:.1f} MiB: {took:.1f} s; peak RSS {after_async:.1f} MiB "
                    f"(+{after_async - before:.1f})"
                )
        finally:
            if server is not None:
                server.terminate()
                server.wait(30)
            prefect.stop()


if __name__ == "__main__":
    main()
