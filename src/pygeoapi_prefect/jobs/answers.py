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
                          and ``Content-Location``, and a ``Link`` header)
========================  =====================================================

(OGC 18-062r2 ``/req/core/process-execute-sync-*``, and for async jobs
``/req/core/job-results-async-*``, which answer "as per" the sync ones.)

``results.raw_several: json`` (``as_map``) answers a raw answer of several
outputs by value as pygeoapi's own managers do, with the process's own JSON
map of them, where it returned one (:func:`is_json_map`,
:func:`values_map`); otherwise multipart stays.

A link is a presigned URL when the store can sign one (S3:
``results.presign_seconds``), else ``<jobs URL>/<job id>/results/<output id>``
(:func:`output_answer` serves that). Everything streams from the store: no
output is loaded whole unless it is inlined in a document.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from pygeoapi_prefect.errors import InvalidInputs, NoSuchOutput
from pygeoapi_prefect.jobs.multipart import Section, header_text, related
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
    "is_json_map",
    "is_multipart",
    "is_narrowed",
    "one_of_several",
    "output_answer",
    "results_answer",
    "several_outputs",
    "transmission",
    "values_answer",
    "values_map",
]

#: The relation of a ``Link`` header naming one output (its id is the title).
#: OGC 18-062r2 wants "one or more ``Link`` headers that reference each
#: requested output" (RFC 8288; ``/req/core/process-execute-sync-raw-ref``,
#: the async ``/req/core/job-results-async-raw-ref`` "as per" it) and names
#: no relation for them; RFC 8288 wants a registered relation or a URI, and the OGC
#: register's ``results`` ("the target URI points to the results of a job",
#: 18-062r2 clause 5) is the one that fits. The 2.0 draft keeps the ``Link``
#: headers, again without a relation.
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
        """The ``Link`` header value of one output (RFC 8288).

        ``title`` is the output id; an id that is not printable ASCII is
        also given exactly as ``title*`` (RFC 8187), and percent-encoded in
        ``title``: a header value is ASCII, so no output id can break it.
        """
        output_id = part.output_id
        title = header_text(output_id).replace("\\", "\\\\").replace('"', '\\"')
        mimetype = header_text(part.mimetype).replace('"', "")
        value = f'<{self.href(part)}>; rel="{OUTPUT_REL}"; type="{mimetype}"; title="{title}"'
        if not (output_id.isascii() and output_id.isprintable()):
            value += f"; title*=UTF-8''{quote(output_id, safe='')}"
        return value


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
    # /req/core/process-execute-sync-raw-value-multi and -raw-mixed-multi:
    # 200, one part per output, straight from the store.
    sections, headers = [], []
    for part in parts:
        if part.output_id in manifest.references:
            sections.append(Section(part.output_id, part.mimetype, 0, href=links.href(part)))
            # The same link as a header too: a client that reads only the
            # headers (as for an all-by-reference 204) finds it there.
            headers.append(links.header(part))
            continue
        chunks = _part_chunks(store, job_id, part)
        sections.append(Section(part.output_id, part.mimetype, part.size, chunks))
    content_type, body, size = related(sections)
    return Answer(200, content_type, body, size, headers)


def _part_chunks(store: ResultStore, job_id: str, part: Part) -> Callable[[], Iterator[bytes]]:
    return lambda: store.iter_part(job_id, part)


def is_multipart(manifest: Manifest) -> bool:
    """Whether the job's raw answer is ``multipart/related``: several outputs, one by value."""
    parts = manifest.answered_parts()
    return (
        manifest.response == "raw"
        and len(parts) > 1
        and any(part.output_id not in manifest.references for part in parts)
    )


def is_json_map(manifest: Manifest) -> bool:
    """Whether the job's several outputs are one JSON map the process returned.

    The map as it returned it, as JSON (its media type says so), with no
    output asked for by reference, none streamed through the outputs API
    and no bytes among them (which JSON cannot hold): what
    ``results.raw_several: json`` answers instead of ``multipart/related``.
    """
    return (
        manifest.whole
        and manifest.encoding == "json"
        and _is_json_type(manifest.mimetype)
        and not manifest.references
        and len(manifest.parts) > 1
        and all(part.encoding != "bytes" for part in manifest.parts)
    )


def values_map(
    outputs: Any, mimetype: str, output_ids: tuple[str, ...], media_types: dict[str, str]
) -> bool:
    """:func:`is_json_map` of outputs held in memory (a sync job's, the process's return)."""
    found = split_outputs(outputs, mimetype, output_ids, media_types)
    return (
        encoding_of(outputs) == "json"
        and _is_json_type(mimetype)
        and len(found) > 1
        and all(encoding_of(value) != "bytes" for _, _, value, _ in found)
    )


def _is_json_type(mimetype: str) -> bool:
    # A map with another media type (say image/png) is none that pygeoapi's
    # managers answer either: TinyDB's cannot even store it.
    media_type = mimetype.split(";")[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


def _answered(
    outputs: Any,
    mimetype: str,
    output_ids: tuple[str, ...],
    media_types: dict[str, str],
    requested: tuple[str, ...],
) -> list[tuple[str, str, Any, bool]]:
    return [
        found
        for found in split_outputs(outputs, mimetype, output_ids, media_types)
        if not requested or found[0] in requested
    ]


def several_outputs(
    outputs: Any,
    mimetype: str,
    output_ids: tuple[str, ...],
    media_types: dict[str, str],
    requested: tuple[str, ...] = (),
) -> bool:
    """Whether outputs held in memory answer as several (raw: ``multipart/related``)."""
    return len(_answered(outputs, mimetype, output_ids, media_types, requested)) > 1


def one_of_several(
    outputs: Any,
    mimetype: str,
    output_ids: tuple[str, ...],
    media_types: dict[str, str],
    requested: tuple[str, ...] = (),
) -> tuple[str, Any] | None:
    """(media type, value) of the one output a request names of several held in memory.

    ``None``: the request does not narrow several outputs down to one.
    """
    every = split_outputs(outputs, mimetype, output_ids, media_types)
    answered = _answered(outputs, mimetype, output_ids, media_types, requested)
    if len(every) < 2 or len(answered) != 1:
        return None
    _, part_type, value, _ = answered[0]
    return part_type, value


def is_narrowed(manifest: Manifest) -> bool:
    """Whether the request named some of the job's several outputs (answered by themselves)."""
    return 0 < len(manifest.answered_parts()) < len(manifest.parts)


def values_answer(
    outputs: Any,
    mimetype: str,
    output_ids: tuple[str, ...],
    media_types: dict[str, str],
    requested: tuple[str, ...] = (),
) -> Answer | None:
    """The raw multipart answer of outputs held in memory (a sync job not stored yet).

    ``None``: they are one output, answered as it is.
    """
    found = [
        (output_id, part_type, _encoded(value))
        for output_id, part_type, value, _ in _answered(
            outputs, mimetype, output_ids, media_types, requested
        )
    ]
    if len(found) < 2:
        return None
    sections = [
        Section(output_id, part_type, len(data), _chunks_of(data))
        for output_id, part_type, data in found
    ]
    content_type, body, size = related(sections)
    return Answer(200, content_type, body, size)


def _chunks_of(data: bytes) -> Callable[[], Iterator[bytes]]:
    return lambda: iter((data,))


def results_answer(
    store: ResultStore, job_id: str, manifest: Manifest, links: Links, *, as_map: bool = False
) -> Answer | None:
    """The answer of ``GET /jobs/{id}/results`` as the job asked for it.

    ``None``: a raw output by value that pygeoapi answers itself (a JSON
    output, or one stored before outputs were kept one by one; with
    ``as_map``, the process's JSON map of several outputs, :func:`is_json_map`).
    """
    if manifest.response == "document":
        body = json.dumps(document(store, job_id, manifest, links), default=str).encode()
        return Answer(200, "application/json", body, len(body))
    parts = manifest.answered_parts()
    if not parts:
        return None
    by_reference = [p for p in parts if p.output_id in manifest.references]
    if len(by_reference) == len(parts):
        # /req/core/process-execute-sync-raw-ref: 204, a Link header each.
        return Answer(204, None, b"", 0, [links.header(part) for part in parts])
    if len(parts) > 1:
        if as_map and is_json_map(manifest):
            return None  # the process's own map, as pygeoapi's managers answer it
        return _multipart(store, job_id, manifest, parts, links)
    part = parts[0]
    if manifest.whole and len(manifest.parts) == 1:
        # The one output, as the process returned it (pygeoapi's own
        # {"id", "value"} included).
        if manifest.encoding == "json":
            return None
        return Answer(200, manifest.mimetype, store.iter_output(job_id), manifest.size)
    # /req/core/process-execute-sync-raw-value-one: one output (of several,
    # or streamed), by itself, with its own media type.
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
