"""pygeoapi processes used by the tests (loaded by the pygeoapi servers under test)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pygeoapi.process.base import BaseProcessor, ProcessorExecuteError


def _metadata(process_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "version": "1.0.0",
        "id": process_id,
        "title": process_id,
        "description": f"test process {process_id}",
        "jobControlOptions": ["sync-execute", "async-execute"],
        "keywords": [],
        "links": [],
        "inputs": {},
        "outputs": {"result": {"title": "result", "schema": {"type": "object"}}},
        **extra,
    }


SLEEP_INPUTS = {
    "seconds": {"schema": {"type": "number", "minimum": 0, "maximum": 600}, "minOccurs": 0},
    "beats": {"schema": {"type": "string"}, "minOccurs": 0},
}


class SleepProcessor(BaseProcessor):
    """Beats into a file every 0.05 s for ``seconds`` seconds."""

    def __init__(self, processor_def: dict[str, Any]) -> None:
        super().__init__(processor_def, _metadata("sleep", inputs=SLEEP_INPUTS))

    def execute(self, data: dict[str, Any], outputs: Any = None) -> tuple[str, Any]:
        beats = Path(data["beats"]) if data.get("beats") else None
        deadline = time.monotonic() + float(data.get("seconds", 1))
        count = 0
        while time.monotonic() < deadline:
            count += 1
            if beats is not None:
                with beats.open("a") as handle:
                    handle.write(".")
            time.sleep(0.05)
        return "application/json", {"id": "result", "value": {"beats": count}}


class FailProcessor(BaseProcessor):
    """Always raises, with a message naming its input."""

    def __init__(self, processor_def: dict[str, Any]) -> None:
        super().__init__(
            processor_def,
            _metadata("fail", inputs={"what": {"schema": {"type": "string"}, "minOccurs": 0}}),
        )

    def execute(self, data: dict[str, Any], outputs: Any = None) -> tuple[str, Any]:
        raise ProcessorExecuteError(f"cannot handle {data.get('what', 'this')}")


class JobIdProcessor(BaseProcessor):
    """Returns the job id the manager gave it before it ran."""

    def __init__(self, processor_def: dict[str, Any]) -> None:
        super().__init__(processor_def, _metadata("job-id"))
        self.job_id: str | None = None

    def set_job_id(self, job_id: str) -> None:
        self.job_id = job_id

    def execute(self, data: dict[str, Any], outputs: Any = None) -> tuple[str, Any]:
        return "application/json", {"id": "result", "value": self.job_id}


class ModulesProcessor(BaseProcessor):
    """Says whether its process has imported Prefect, and its pid."""

    def __init__(self, processor_def: dict[str, Any]) -> None:
        super().__init__(processor_def, _metadata("modules"))

    def execute(self, data: dict[str, Any], outputs: Any = None) -> tuple[str, Any]:
        import os
        import sys

        value = {"prefect": "prefect" in sys.modules, "pid": os.getpid()}
        return "application/json", {"id": "result", "value": value}


class BytesProcessor(BaseProcessor):
    """Returns binary output with its own media type."""

    def __init__(self, processor_def: dict[str, Any]) -> None:
        super().__init__(processor_def, _metadata("bytes"))

    def execute(self, data: dict[str, Any], outputs: Any = None) -> tuple[str, Any]:
        return "image/png", b"\x89PNG\r\n\x1a\n" + bytes(range(256))


class AsyncOnlyProcessor(SleepProcessor):
    """A process that only allows async execution."""

    def __init__(self, processor_def: dict[str, Any]) -> None:
        BaseProcessor.__init__(
            self,
            processor_def,
            _metadata("async-only", jobControlOptions=["async-execute"], inputs=SLEEP_INPUTS),
        )


def _square(n: int) -> int:
    return n * n


class SpawningProcessor(BaseProcessor):
    """Starts processes of its own (as scientific code often does)."""

    def __init__(self, processor_def: dict[str, Any]) -> None:
        super().__init__(processor_def, _metadata("spawning"))

    def execute(self, data: dict[str, Any], outputs: Any = None) -> tuple[str, Any]:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(2, mp_context=context) as pool:
            squares = list(pool.map(_square, range(4)))
        return "application/json", {"id": "result", "value": squares}


class ProgressProcessor(BaseProcessor):
    """Reports 50% with a message, then waits ``seconds``."""

    def __init__(self, processor_def: dict[str, Any]) -> None:
        super().__init__(processor_def, _metadata("progress", inputs=SLEEP_INPUTS))

    def execute(self, data: dict[str, Any], outputs: Any = None) -> tuple[str, Any]:
        from pygeoapi_prefect import report_progress

        report_progress(50, "halfway there")
        time.sleep(float(data.get("seconds", 1)))
        return "application/json", {"id": "result", "value": "done"}


class BigProcessor(BaseProcessor):
    """Returns ``megabytes`` MB of binary output."""

    def __init__(self, processor_def: dict[str, Any]) -> None:
        super().__init__(
            processor_def,
            _metadata("big", inputs={"megabytes": {"schema": {"type": "integer"}, "minOccurs": 1}}),
        )

    def execute(self, data: dict[str, Any], outputs: Any = None) -> tuple[str, Any]:
        block = bytes(range(256)) * 4096  # 1 MiB
        return "application/octet-stream", block * int(data["megabytes"])


class RunLogProcessor(BaseProcessor):
    """Appends its job id and process id to the file ``log``, then sleeps ``seconds``.

    One line per start: a job that ran twice shows twice.
    """

    def __init__(self, processor_def: dict[str, Any]) -> None:
        super().__init__(
            processor_def,
            _metadata(
                "run-log",
                inputs={
                    "log": {"schema": {"type": "string"}},
                    "seconds": {"schema": {"type": "number", "minimum": 0}, "minOccurs": 0},
                },
            ),
        )
        self.job_id: str | None = None

    def set_job_id(self, job_id: str) -> None:
        self.job_id = job_id

    def execute(self, data: dict[str, Any], outputs: Any = None) -> tuple[str, Any]:
        import os

        with open(data["log"], "a", encoding="utf-8") as handle:
            handle.write(f"{self.job_id} {os.getpid()}\n")
        time.sleep(float(data.get("seconds", 0)))
        return "application/json", {"id": "result", "value": self.job_id}


class GatherProcessor(BaseProcessor):
    """Notes ``start <pid>`` in ``log``, waits for ``count`` starts there, notes ``end <pid>``.

    Waits at most ``seconds``; with ``child``, first starts a ``sleep`` process
    of its own and notes ``child <pid>``. Shows which jobs ran at the same time.
    """

    def __init__(self, processor_def: dict[str, Any]) -> None:
        super().__init__(
            processor_def,
            _metadata(
                "gather",
                inputs={
                    "log": {"schema": {"type": "string"}},
                    "count": {"schema": {"type": "integer"}, "minOccurs": 0},
                    "seconds": {"schema": {"type": "number", "minimum": 0}, "minOccurs": 0},
                    "child": {"schema": {"type": "boolean"}, "minOccurs": 0},
                },
            ),
        )

    def execute(self, data: dict[str, Any], outputs: Any = None) -> tuple[str, Any]:
        import os
        import subprocess

        log = Path(data["log"])

        def note(line: str) -> None:
            with log.open("a", encoding="utf-8") as handle:
                handle.write(f"{line}\n")

        if data.get("child"):
            note(f"child {subprocess.Popen(['sleep', '600']).pid}")
        note(f"start {os.getpid()}")
        deadline = time.monotonic() + float(data.get("seconds", 60))
        count = int(data.get("count", 1))
        while time.monotonic() < deadline:
            if log.read_text().count("start ") >= count:
                break
            time.sleep(0.02)
        note(f"end {os.getpid()}")
        return "application/json", {"id": "result", "value": os.getpid()}


class BadChattyInput(ProcessorExecuteError):
    """A process's own 400: the input cannot be used."""

    ogc_exception_code = "InvalidParameterValue"
    http_status_code = 400


class ChattyProcessor(BaseProcessor):
    """Logs ``lines`` INFO records and a WARNING, prints to stdout and stderr, with ``marker``.

    ``fail``: "500" raises a plain process error, "400" one with the process's own
    400 InvalidParameterValue; ``seconds``: sleeps that long after logging.
    """

    def __init__(self, processor_def: dict[str, Any]) -> None:
        inputs = {
            "marker": {"schema": {"type": "string"}, "minOccurs": 0},
            "lines": {"schema": {"type": "integer", "minimum": 0}, "minOccurs": 0},
            "fail": {"schema": {"type": "string"}, "minOccurs": 0},
            "seconds": {"schema": {"type": "number", "minimum": 0}, "minOccurs": 0},
        }
        super().__init__(processor_def, _metadata("chatty", inputs=inputs))

    def execute(self, data: dict[str, Any], outputs: Any = None) -> tuple[str, Any]:
        import logging
        import sys

        marker = data.get("marker", "chatty")
        log = logging.getLogger("chatty.process")
        log.debug("%s debug line (below the kept level)", marker)
        for number in range(int(data.get("lines", 3))):
            log.info("%s line %d", marker, number)
        log.warning("%s warning", marker)
        print(f"{marker} printed to stdout")
        print(f"{marker} printed to stderr", file=sys.stderr)
        time.sleep(float(data.get("seconds", 0)))
        if data.get("fail") == "400":
            raise BadChattyInput(f"{marker}: this input cannot be used")
        if data.get("fail"):
            raise ProcessorExecuteError(f"{marker}: chatty failed on purpose")
        return "application/json", {"id": "result", "value": {"marker": marker}}


class ClientsProcessor(BaseProcessor):
    """Reports progress, logs a line, waits ``seconds``, then notes its process's HTTP clients.

    Writes ``{"clients": n, "pools": n, "pid": pid}`` to the file ``note``:
    the httpx clients and httpcore connection pools alive in the job's
    process once its heartbeats, progress and log shipping have all spoken.
    """

    def __init__(self, processor_def: dict[str, Any]) -> None:
        super().__init__(
            processor_def,
            _metadata(
                "clients",
                inputs={
                    "note": {"schema": {"type": "string"}},
                    "seconds": {"schema": {"type": "number", "minimum": 0}, "minOccurs": 0},
                },
            ),
        )

    def execute(self, data: dict[str, Any], outputs: Any = None) -> tuple[str, Any]:
        import gc
        import json
        import logging
        import os

        import httpcore
        import httpx

        from pygeoapi_prefect import report_progress

        report_progress(10, "counting clients")
        logging.getLogger("tests.clients").warning("a line for the job's log")
        time.sleep(float(data.get("seconds", 1.5)))
        alive = gc.get_objects()
        note = {
            "clients": sum(isinstance(o, httpx.Client) for o in alive),
            "pools": sum(isinstance(o, httpcore.ConnectionPool) for o in alive),
            "pid": os.getpid(),
        }
        Path(data["note"]).write_text(json.dumps(note), encoding="utf-8")
        return "application/json", {"id": "result", "value": note}


class BusyBackgroundProcessor(BaseProcessor):
    """Occupies every thread of its server's background pools until the file ``release`` exists.

    Run sync, in the server process: it hands the engine's pools (the UI
    extras' and the other background work's) one call a thread that waits
    for ``release`` (at most ``seconds``, 120 by default), so that the work
    queued after it waits, as it does when Prefect's write slots are busy
    with jobs. The calls go straight to the pools, past the engine's
    backlog, which counts only what the server itself queues.
    """

    def __init__(self, processor_def: dict[str, Any]) -> None:
        inputs = {
            "release": {"schema": {"type": "string"}},
            "seconds": {"schema": {"type": "number", "minimum": 0}, "minOccurs": 0},
        }
        super().__init__(processor_def, _metadata("busy-background", inputs=inputs))

    def execute(self, data: dict[str, Any], outputs: Any = None) -> tuple[str, Any]:
        import threading

        from pygeoapi_prefect.execution import engine as engines

        release = Path(data["release"])
        deadline = time.monotonic() + float(data.get("seconds", 120))
        (engine,) = engines._ENGINES.values()
        pools = [engine.extras(), engine.background()]
        threads = sum(pool.workers for pool in pools)
        started = threading.Barrier(threads + 1)

        def wait() -> None:
            started.wait(30)
            while not release.exists() and time.monotonic() < deadline:
                time.sleep(0.05)

        for pool in pools:
            for _ in range(pool.workers):
                pool.submit(wait)
        started.wait(30)  # every thread of both pools is taken
        return "application/json", {"id": "result", "value": {"busy": threads}}


class SpanProcessor(BaseProcessor):
    """Notes its start and end in the folder ``spans``, sleeping ``seconds`` in between.

    One file per job, ``<name>``: ``<start> <end> <pid> <worker pid>`` (monotonic
    clock, the same for every process of the machine), written in two steps,
    each atomically, so that a job that never ended shows only its start. The worker is the
    server process whose pool forked the job (the parent of the template).
    """

    def __init__(self, processor_def: dict[str, Any]) -> None:
        super().__init__(
            processor_def,
            _metadata(
                "span",
                inputs={
                    "spans": {"schema": {"type": "string"}},
                    "name": {"schema": {"type": "string"}},
                    "seconds": {"schema": {"type": "number", "minimum": 0}, "minOccurs": 0},
                },
            ),
        )

    def execute(self, data: dict[str, Any], outputs: Any = None) -> tuple[str, Any]:
        import os

        template = os.getppid()
        stat = Path(f"/proc/{template}/stat").read_text()
        worker = int(stat.rsplit(")", 1)[1].split()[1])
        path = Path(data["spans"]) / data["name"]

        def note(text: str) -> None:
            # A reader must never see the file empty or half written:
            # write aside, then rename over it (atomic on one file system).
            aside = path.with_name(f".{path.name}.{os.getpid()}")
            aside.write_text(text)
            os.replace(aside, path)

        start = time.monotonic()
        note(f"{start} - {os.getpid()} {worker}")
        time.sleep(float(data.get("seconds", 0)))
        note(f"{start} {time.monotonic()} {os.getpid()} {worker}")
        return "application/json", {"id": "result", "value": data["name"]}
