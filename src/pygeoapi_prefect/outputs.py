"""Outputs larger than memory: a process writes them straight to the result store.

From a process (a pygeoapi processor's ``execute``, or a Prefect flow
published as a process), wherever its job runs (the request of a sync job,
a local worker process, a Prefect worker)::

    from pygeoapi_prefect import outputs

    with outputs.open("image", "image/tiff") as sink:
        for block in render_blocks():
            sink.write(block)
    return "application/json", None   # or other outputs, as usual

The file object writes to ``<job id>/outputs/<output id>`` in the job's
result store (on S3, a multipart upload, a block at a time), so the output
never has to fit in memory. Once the process returns, the output is one of
the job's outputs like any other: served by reference (a presigned URL on
S3) or streamed in chunks from ``GET /jobs/{jobId}/results/{outputId}``.

Outside a job :func:`open` raises ``RuntimeError``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from pygeoapi_prefect.jobs.results import OutputWriter, Part, ResultStore

__all__ = ["JobOutputs", "open", "writing_to"]


@dataclass
class JobOutputs:
    """Where the running job's outputs go, and those written so far."""

    store: ResultStore
    job_id: Callable[[], str]
    written: dict[str, Part] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def parts(self) -> tuple[Part, ...]:
        """The outputs written (and closed) so far."""
        with self.lock:
            return tuple(self.written.values())


_current: ContextVar[JobOutputs | None] = ContextVar("pygeoapi_prefect_outputs", default=None)


@contextmanager
def writing_to(store: ResultStore, job_id: Callable[[], str]) -> Iterator[JobOutputs]:
    """Let :func:`open` calls made inside write to this job (the runners' side).

    ``job_id`` is called on the first :func:`open` (a sync job is recorded,
    and so given its id, only then).
    """
    outputs = JobOutputs(store, job_id)
    token = _current.set(outputs)
    try:
        yield outputs
    finally:
        _current.reset(token)


def open(  # noqa: A001 - the file-object idiom: outputs.open(...)
    output_id: str, media_type: str = "application/octet-stream"
) -> OutputWriter:
    """A writable binary file object for output ``output_id`` of the running job.

    Close it (or use it as a context manager) before the process returns: an
    output whose writer was not closed without error is not part of the job.

    Raises:
        RuntimeError: called outside a job.
        TypeError: ``output_id`` or ``media_type`` is not a string.
    """
    if not isinstance(output_id, str) or not isinstance(media_type, str):
        raise TypeError("outputs.open takes an output id and a media type, both strings")
    outputs = _current.get()
    if outputs is None:
        raise RuntimeError("pygeoapi_prefect.outputs.open is only available inside a job")
    job_id = outputs.job_id()
    if not job_id:
        raise RuntimeError("the job has no id yet (its record is being written)")

    def written(part: Part) -> None:
        with outputs.lock:
            outputs.written[part.output_id] = part

    return outputs.store.open_output(job_id, output_id, media_type, on_close=written)
