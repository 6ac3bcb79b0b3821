"""Callback delivery: threads against a dead target, and the cost of a checked connection.

Run: ``.venv/bin/python benchmarks/callbacks.py [--deliveries 50] [--posts 200]``

1. ``--deliveries`` callbacks to a loopback socket that accepts connections
   and never answers (a dead target), through ``CallbackPolicy`` with the
   default pool (4 workers, 200 queued): the most callback threads alive at
   once, and how long ``close(drain_seconds=1)`` takes.
2. ``--posts`` sequential POSTs of a small JSON document to a loopback
   listener: ``Destinations.post_json`` (resolve, check, connect to the
   checked address, no keep-alive) against a plain ``httpx.post`` (what
   callbacks used before), median milliseconds each.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from pygeoapi_prefect.destinations import Destinations
from pygeoapi_prefect.execution.callbacks import THREAD_NAME, CallbackPolicy


class _Quiet(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def dead_target(deliveries: int) -> dict[str, float]:
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen(1024)
    port = listening.getsockname()[1]
    policy = CallbackPolicy(["127.0.0.1/32"], timeout=10, retries=4)
    most = 0
    for number in range(deliveries):
        subscriber = {"successUri": f"http://127.0.0.1:{port}/cb?t=secret"}
        policy.send(subscriber, "successUri", {"n": number}, job=f"job-{number}")
        alive = sum(t.name == THREAD_NAME for t in threading.enumerate())
        most = max(most, alive)
    time.sleep(1)
    most = max(most, sum(t.name == THREAD_NAME for t in threading.enumerate()))
    started = time.perf_counter()
    policy.close(1)
    closed = time.perf_counter() - started
    listening.close()
    return {"deliveries": deliveries, "most threads": most, "close s": round(closed, 2)}


def post_cost(posts: int) -> dict[str, float]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/cb"
    destinations = Destinations(["127.0.0.1/32"])
    document = {"status": "successful", "jobID": "x" * 36}
    checked, plain = [], []
    for _ in range(posts):
        started = time.perf_counter()
        destinations.post_json(url, document, timeout=10)
        checked.append(time.perf_counter() - started)
        started = time.perf_counter()
        httpx.post(url, json=document, timeout=10)
        plain.append(time.perf_counter() - started)
    server.shutdown()
    return {
        "posts": posts,
        "checked post_json median ms": round(statistics.median(checked) * 1000, 2),
        "plain httpx.post median ms": round(statistics.median(plain) * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=50)
    parser.add_argument("--posts", type=int, default=200)
    args = parser.parse_args()
    results = {"dead target": dead_target(args.deliveries), "cost": post_cost(args.posts)}
    json.dump(results, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
