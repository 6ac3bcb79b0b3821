"""What a job's results answer is: by value or by reference, raw or a document, one output.

OGC API - Processes 1.0 lets each output be asked for by value or by
reference (``"outputs": {"<id>": {"transmissionMode": "reference"}}``) and
the whole answer as ``raw`` or a results ``document``:

========================  =====================================================
document                  200, ``{"<id>": value or {"href", "type"}}``
raw, all by reference     204, one ``Link`` header per output (no body)
raw, one output by value  200, the output itself, with its media type
raw, several, or mixed    200, ``multipart/related``, one part per output
                          (``Content-ID`` its id; by reference: an empty body
                          and ``Content-Location``)
========================  =====================================================

A link is a presigned URL when the store can sign one (S3:
``results.presign_seconds``), else ``<jobs URL>/<job id>/results/<output id>``
(:func:`output_answer` serves that). Everything streams from the store: no
output is loaded whole unless it is inlined in a document.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from pygeoapi_prefect.errors import InvalidInputs, NoSuchOutput
from pygeoapi_prefect.jobs.results import (
    Manifest,
    Part,
    ResultStore,
    encoding_of,
    inline_value,
    results_document,
    split_outputs,
)

__all__ = [
    "OUTPUT_REL",
    "TRANSMISSION_MODES",
    "Answer",
    "Links",
    "document",
    "output_answer",
    "results_answer",
    "transmission",
]

#: The relation of a ``Link`` header naming one output (its id is the title).
OUTPUT_REL = "http://www.opengis.net/def/rel/ogc/1.0/results"
TRANSMISSION_MODES = ("value", "reference")


@dataclass
class Answer:
    """An HTTP answer of results: ``body`` bytes or chunks; ``links`` ``Link`` header values."""

    status: int
    mimetype: str | None
    body: bytes | Iterator[bytes] = b""
    size: int | None = None
    links: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Links:
    """How the links of one job's outputs are made."""

    store: ResultStore
    key: str  # the job's results in the store (ResultStore.key)
    job_id: str
    jobs_url: str | None
    presign_seconds: int

    def href(self, part: Part) -> str:
        """A presigned URL of the output, else its pygeoapi URL."""
        signed = self.store.sign(self.key, part, self.presign_seconds)
        if signed is not None:
            return signed
        base = (self.jobs_url or "/jobs").rstrip("/")
        return f"{base}/{self.job_id}/results/{quote(part.output_id, safe='')}"

    def header(self, part: Part) -> str:
        """The ``Link`` header value of one output."""
        title = part.output_id.replace("\\", "\\\\").replace('"', '\\"')
        return f'<{self.href(part)}>; rel="{OUTPUT_REL}"; type="{part.mimetype}"; title="{title}"'


def transmission(requested_outputs: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(the output ids a request names, those asked for by reference).

    Raises:
        InvalidInputs: a ``transmissionMode`` other than ``value`` or ``reference``.
    """
    if not isinstance(requested_outputs, dict):
        return (), ()
    named, references, problems = [], [], []
    for output_id, wanted in requested_outputs.items():
        named.append(str(output_id))
        mode = (wanted or {}).get("transmissionMode", "value") if isinstance(wanted, dict) else None
        if mode not in TRANSMISSION_MODES:
            problems.append(
                f"output '{output_id}': transmissionMode must be 'value' or 'reference', "
                f"got {mode!r:.40}"
            )
        elif mode == "reference":
            references.append(str(output_id))
    if problems:
        raise InvalidInputs("Invalid execute request: " + "; ".join(problems), problems=problems)
    return tuple(named), tuple(references)


def _legacy_parts(store: ResultStore, job_id: str, manifest: Manifest) -> list[tuple[Part, Any]]:
    # A manifest written before outputs were stored one by one: split the
    # whole output in memory (such outputs were held in memory when made).
    _, outputs = store.read(job_id)
    found = []
    for output_id, mimetype, value, _whole in split_outputs(
        outputs, manifest.mimetype, manifest.output_ids
    ):
        found.append((Part(output_id, mimetype, encoding_of(value), 0, ""), value))
    return found


def document(store: ResultStore, job_id: str, manifest: Manifest, links: Links) -> dict[str, Any]:
    """The OGC 1.0 results document: each output inline, or ``{"href", "type"}``."""
    if not manifest.parts:
        _, outputs = store.read(job_id)
        return results_document(outputs, manifest.mimetype, manifest.output_ids)
    answer: dict[str, Any] = {}
    for part in manifest.answered_parts():
        if part.output_id in manifest.references:
            answer[part.output_id] = {"href": links.href(part), "type": part.mimetype}
        else:
            value = _typed(store.read_part(job_id, part), part.mimetype)
            answer[part.output_id] = inline_value(value, part.mimetype)
    return answer


def _typed(value: Any, mimetype: str) -> Any:
    # Bytes a process streamed, as their media type says: text, or JSON.
    if not isinstance(value, bytes):
        return value
    try:
        if mimetype == "application/json" or mimetype.endswith("+json"):
            return json.loads(value)
        if mimetype.startswith("text/"):
            return value.decode("utf-8")
    except ValueError:
        pass  # not what its media type says: base64, as any bytes
    return value


def _multipart(
    store: ResultStore, job_id: str, manifest: Manifest, parts: tuple[Part, ...], links: Links
) -> Answer:
    boundary = uuid.uuid4().hex

    def chunks() -> Iterator[bytes]:
        for part in parts:
            head = (
                f"--{boundary}\r\nContent-ID: <{part.output_id}>\r\n"
                f"Content-Type: {part.mimetype}\r\n"
            )
            if part.output_id in manifest.references:
                yield (head + f"Content-Location: {links.href(part)}\r\n\r\n\r\n").encode()
                continue
            yield (head + f"Content-Length: {part.size}\r\n\r\n").encode()
            yield from store.iter_part(job_id, part)
            yield b"\r\n"
        yield f"--{boundary}--\r\n".encode()

    return Answer(200, f'multipart/related; boundary="{boundary}"', chunks())


def results_answer(
    store: ResultStore, job_id: str, manifest: Manifest, links: Links
) -> Answer | None:
    """The answer of ``GET /jobs/{id}/results`` as the job asked for it.

    ``None``: a raw output by value that pygeoapi answers itself (a JSON
    output, or one stored before outputs were kept one by one).
    """
    if manifest.response == "document":
        body = json.dumps(document(store, job_id, manifest, links), default=str).encode()
        return Answer(200, "application/json", body, len(body))
    parts = manifest.answered_parts()
    if not parts:
        return None
    by_reference = [p for p in parts if p.output_id in manifest.references]
    if len(by_reference) == len(parts):
        return Answer(204, None, b"", 0, [links.header(part) for part in parts])
    if by_reference or len(parts) > 1 and not manifest.whole:
        return _multipart(store, job_id, manifest, parts, links)
    if manifest.whole:
        if manifest.encoding == "json":
            return None
        return Answer(200, manifest.mimetype, store.iter_output(job_id), manifest.size)
    part = parts[0]
    return Answer(200, part.mimetype, store.iter_part(job_id, part), part.size)


def output_answer(store: ResultStore, job_id: str, manifest: Manifest, output_id: str) -> Answer:
    """One output, streamed with its own media type (``GET /jobs/{id}/results/{outputId}``).

    Raises:
        NoSuchOutput: the job has no output of that id (a 404).
    """
    if not manifest.parts:
        for part, value in _legacy_parts(store, job_id, manifest):
            if part.output_id == output_id:
                data = _encoded(value)
                return Answer(200, part.mimetype, data, len(data))
        raise NoSuchOutput(f"Job {job_id} has no output {output_id!r}")
    found = manifest.part(output_id)
    if found is None:
        raise NoSuchOutput(f"Job {job_id} has no output {output_id!r}")
    return Answer(200, found.mimetype, store.iter_part(job_id, found), found.size)


def _encoded(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    return json.dumps(value, separators=(",", ":"), default=str).encode("utf-8")
