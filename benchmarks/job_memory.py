"""What one local job process costs: PSS, USS and its biggest private mappings.

    .venv/bin/python benchmarks/job_memory.py [--jobs 20] [--seconds 4] [--tracemalloc]

Starts a Prefect server and a pygeoapi server with PrefectManager the way
benchmarks/core.py does (its helpers), runs ``--jobs`` async jobs of the
``sleeper`` process at once (each sleeps ``--seconds``: its heartbeats and
log shipping get their turn, relayed by its server since relay.py) and samples every job
process every 0.25 s while it runs, keeping its largest sample. It prints
one row per job process, then the medians, the template and the server.

USS is the process's own memory (``Private_Clean + Private_Dirty`` of
``/proc/<pid>/smaps_rollup``); PSS adds its share of the pages it shares
with the template and its siblings. With ``--tracemalloc`` each job process
also traces what Python allocated after its fork (``TRACE_ENV`` of
``execution/local.py``) and the modules it imported after it; the table
then shows the biggest allocation sites. Tracing costs memory itself: the
PSS and USS figures are those of a run without it.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import statistics
import sys
import tempfile
import threading
import uuid
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from core import (  # noqa: E402 - the benchmark's own helpers, after its path
    SLEEPER,
    execute,
    log,
    pss_tree_mib,
    start_lean_prefect,
    start_pygeoapi,
    wait_done,
)

from pygeoapi_prefect.execution.local import TRACE_ENV  # noqa: E402

KIB = 1024.0


def rollup_kib(pid: int) -> dict[str, float]:
    """The fields of ``/proc/<pid>/smaps_rollup`` (kiB)."""
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, value = line.partition(":")
        parts = value.split()
        if parts and parts[-1] == "kB":
            fields[key] = float(parts[0])
    return fields


def private_by_mapping(pid: int) -> Counter[str]:
    """Private kiB (clean + dirty) of each kind of mapping: [heap], [anon], [stack], a file."""
    private: Counter[str] = Counter()
    name = ""
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split(maxsplit=5)
        if len(head) >= 5 and "-" in head[0] and ":" not in head[0]:
            name = head[5] if len(head) == 6 else "[anon]"
            name = name if name.startswith("[") else Path(name).name
        elif line.startswith(("Private_Clean:", "Private_Dirty:")):
            private[name] += float(line.split()[1])
    return private


class Sample:
    """The sample of one process with the most memory of its own (by USS).

    Not the largest PSS: a process's PSS grows as its siblings end (the
    pages they shared are split among fewer), its USS does not.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.pss = self.uss = 0.0
        self.mappings: Counter[str] = Counter()
        self.threads = 0
        self.parent = 0

    def take(self) -> bool:
        try:
            rollup = rollup_kib(self.pid)
            uss = rollup.get("Private_Clean", 0.0) + rollup.get("Private_Dirty", 0.0)
            if uss <= self.uss:
                return True
            mappings = private_by_mapping(self.pid)
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return False  # the job ended
        self.pss = rollup.get("Pss", 0.0)
        self.uss = uss
        self.mappings = mappings
        self.threads = int(status.split("Threads:")[1].split()[0])
        self.parent = int(status.split("PPid:")[1].split()[0])
        return True


def run_jobs(url: str, pids_file: Path, jobs: int, seconds: float) -> dict[int, Sample]:
    """Submit ``jobs`` sleepers at once; sample each job process while it runs."""
    pids_file.unlink(missing_ok=True)
    names = [f"mem-{uuid.uuid4().hex[:10]}" for _ in range(jobs)]

    def submit(name: str) -> str:
        with httpx.Client(base_url=url, timeout=120) as client:
            response = execute(client, True, SLEEPER, name=name, seconds=seconds)
            return response.headers["Location"].rsplit("/", 1)[-1]

    samples: dict[int, Sample] = {}
    done = threading.Event()

    def sampler() -> None:
        while not done.is_set():
            lines = pids_file.read_text().splitlines() if pids_file.exists() else []
            for line in lines:
                pid = int(line.split()[1])
                samples.setdefault(pid, Sample(pid))
            for sample in samples.values():
                sample.take()
            done.wait(0.25)

    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        job_ids = list(pool.map(submit, names))
    ended = wait_done(url, job_ids, timeout=120 + seconds * jobs)
    done.set()
    thread.join()
    failed = [job_id for job_id, job in ended.items() if job["status"] != "successful"]
    if failed:
        raise RuntimeError(f"{len(failed)} jobs did not succeed: {failed[:3]}")
    return samples


def print_table(samples: dict[int, Sample], traces: dict[int, dict]) -> None:
    mib = KIB
    kinds = Counter[str]()
    for sample in samples.values():
        kinds.update(sample.mappings)
    shown = [kind for kind, _ in kinds.most_common(4)]
    header = ["pid", "PSS MiB", "USS MiB", "threads", *(f"{k} priv MiB" for k in shown)]
    if traces:
        header += ["traced MiB", "imported after fork"]
    rows = []
    for pid, sample in sorted(samples.items()):
        row = [str(pid), f"{sample.pss / mib:.2f}", f"{sample.uss / mib:.2f}", str(sample.threads)]
        row += [f"{sample.mappings[k] / mib:.2f}" for k in shown]
        if traces:
            trace = traces.get(pid, {})
            row += [f"{trace.get('traced', 0) / 2**20:.2f}", str(len(trace.get("imported", [])))]
        rows.append(row)
    median = ["median"]
    for column in range(1, len(header)):
        values = [float(row[column]) for row in rows]
        median.append(f"{statistics.median(values):.2f}" if values else "-")
    rows.append(median)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |")


def print_traces(traces: dict[int, dict]) -> None:
    if not traces:
        return
    sites: Counter[str] = Counter()
    imported: Counter[str] = Counter()
    for trace in traces.values():
        for site, size, _count in trace["top"]:
            sites[site] += size
        imported.update(trace["imported"])
    count = len(traces)
    first = next(iter(traces.values()))
    print(f"\nPrefect imported by the template: {first.get('prefect_in_template')}")
    print(f"root handlers in a job process: {', '.join(first.get('handlers', []))}")
    print(f"\nBiggest allocation sites after the fork (mean over {count} job processes, KiB):")
    for site, size in sites.most_common(15):
        print(f"  {size / count / KIB:8.1f}  {site}")
    print(f"\nModules imported after the fork ({len(imported)}):")
    print("  " + (", ".join(sorted(imported)) or "none"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20, help="sleep jobs at once")
    parser.add_argument("--seconds", type=float, default=4.0, help="how long each job sleeps")
    parser.add_argument(
        "--without-flows",
        action="store_true",
        help="serve hello-world in place of example-config's Prefect flow process",
    )
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="trace Python's allocations in each job process after its fork",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pygeoapi-prefect-jobmem-"))
    prefect = start_lean_prefect(work)
    try:
        env = dict(os.environ) | {
            "PREFECT_API_URL": prefect.api_url,
            "PREFECT_HOME": str(work / "home"),
        }
        traces_dir = work / "traces"
        if args.tracemalloc:
            traces_dir.mkdir()
            env[TRACE_ENV] = str(traces_dir)
        manager = {
            "name": "pygeoapi_prefect.manager.PrefectManager",
            "results": {"url": str(work / "results")},
        }
        folder = work / "prefect"
        folder.mkdir()
        log("starting pygeoapi ...")
        # A flow process has the server import Prefect (before the fork: shared with the template).
        processors = {"hi-prefect-world": {"name": "HelloWorld"}} if args.without_flows else None
        process, url = start_pygeoapi(
            folder, manager, "pygeoapi_prefect.flask_app", env, processors
        )
        try:
            # Warm up: the template, the connection pools, one job through the pool.
            run_jobs(url, folder / "pids.txt", 1, 0.1)
            log(f"{args.jobs} sleep({args.seconds:g}) jobs at once ...")
            peak = [0.0]
            stop = threading.Event()

            def footprint() -> None:
                while not stop.is_set():
                    peak[0] = max(peak[0], pss_tree_mib(process.pid))
                    stop.wait(0.25)

            watcher = threading.Thread(target=footprint, daemon=True)
            watcher.start()
            samples = run_jobs(url, folder / "pids.txt", args.jobs, args.seconds)
            stop.set()
            watcher.join()
            # Sampled after the jobs: the template outlives them.
            template_pid = next((s.parent for s in samples.values() if s.parent), None)
            server = rollup_kib(process.pid)
            template = rollup_kib(template_pid) if template_pid else {}
        finally:
            process.terminate()
            process.wait(30)
    finally:
        prefect.stop()
    traces = {int(path.stem): json.loads(path.read_text()) for path in traces_dir.glob("*.json")}
    print_table(samples, traces)
    for name, rollup in (("server", server), ("template", template)):
        uss = rollup.get("Private_Clean", 0.0) + rollup.get("Private_Dirty", 0.0)
        print(
            f"\n{name}: PSS {rollup.get('Pss', 0.0) / KIB:.1f} MiB, USS {uss / KIB:.1f} MiB"
            " (after the jobs)",
            end="",
        )
    print(f"\nwhole footprint while the jobs ran (PSS of the server tree, max): {peak[0]:.1f} MiB")
    print_traces(traces)
    log(f"work folder {work}")


if __name__ == "__main__":
    main()
