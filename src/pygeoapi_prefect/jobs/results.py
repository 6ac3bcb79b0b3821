"""The result store: each job's outputs on any fsspec filesystem.

Layout, under the store URL (every key is built by :meth:`ResultStore.key`)::

    <job id>/output               the process output, exactly as it returned it
    <job id>/outputs/<output id>  one output of a multi-output job, or one a
                                  process streamed (pygeoapi_prefect.outputs)
    <job id>/manifest.json        media types, encodings, sizes, the response
                                  mode, the outputs asked for by reference

Nothing is pickled: outputs are JSON, text or bytes, and a reader never runs
code from the store. Job ids are UUIDs (checked before any path is built) and
output ids become object names only through :func:`part_name`, so no key can
leave the store.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pygeoapi_prefect.credentials import credential_values
from pygeoapi_prefect.errors import ResultNotFound, ResultStoreError
from pygeoapi_prefect.jobs.owners import space_of
from pygeoapi_prefect.urls import without_credentials

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

logger = logging.getLogger(__name__)

__all__ = ["Manifest", "OutputWriter", "Part", "ResultStore", "part_name", "results_document"]

MANIFEST = "manifest.json"
#: Output ids that are object names as they are; any other id is hashed.
_SAFE_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")
_JSON_TYPES = ("application/json",)
_PART_KEYS = {"output_id", "mimetype", "encoding", "size", "name"}
#: An owner space made by jobs.owners.space_of.
_SPACE = re.compile(r"[A-Za-z0-9_-]{1,40}-[0-9a-f]{8}")
OUTPUT = "output"


def part_name(output_id: str) -> str:
    """The object name of one output under its job (``outputs/<id>``; odd ids hashed)."""
    if _SAFE_ID.fullmatch(output_id):
        return f"outputs/{output_id}"
    return "outputs/~" + hashlib.sha256(output_id.encode("utf-8")).hexdigest()[:40]


@dataclass(frozen=True)
class Part:
    """One output of a job: its media type and the object that holds it.

    ``name`` is ``output`` when the output is the whole of what the process
    returned, else :func:`part_name` of its id.
    """

    output_id: str
    mimetype: str
    encoding: str  # "json", "text" or "bytes"
    size: int
    name: str


@dataclass(frozen=True)
class Manifest:
    """What the store knows about one job's outputs.

    ``mimetype``, ``encoding`` and ``size`` describe ``output`` (what the
    process returned; ``whole`` False when it streamed its outputs instead).
    ``parts`` has one entry per output, ``references`` the ids asked for by
    reference, ``requested`` the ids the request named (empty: all).
    """

    mimetype: str
    encoding: str  # "json", "text" or "bytes"
    size: int
    response: str = "raw"  # the OGC response mode the job was asked for
    output_ids: tuple[str, ...] = ()
    parts: tuple[Part, ...] = ()
    references: tuple[str, ...] = ()
    requested: tuple[str, ...] = ()
    whole: bool = True

    def part(self, output_id: str) -> Part | None:
        """The output of this id, if the job has one."""
        return next((p for p in self.parts if p.output_id == output_id), None)

    def answered_parts(self) -> tuple[Part, ...]:
        """The outputs the job's answer holds: those requested, else all."""
        if not self.requested:
            return self.parts
        return tuple(p for p in self.parts if p.output_id in self.requested)


#: Bytes written or read at a time: large outputs never need a second copy.
CHUNK = 1024 * 1024
#: The block of a streamed output (an S3 multipart part; S3's least is 5 MiB).
OUTPUT_BLOCK = 8 * 1024 * 1024
#: The block read ahead when an output is streamed out (one ranged GET on S3).
READ_BLOCK = 4 * 1024 * 1024


def encoding_of(outputs: Any) -> str:
    """How an output is stored: ``bytes``, ``text`` or ``json``."""
    if isinstance(outputs, bytes | bytearray | memoryview):
        return "bytes"
    if isinstance(outputs, str):
        return "text"
    return "json"


class _Counting(io.RawIOBase):
    """A writable that passes bytes on to a file and counts them."""

    def __init__(self, target: Any) -> None:
        self.target = target
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        written = len(data)
        self.target.write(data)
        self.size += written
        return written


def _write_output(handle: Any, encoding: str, outputs: Any) -> int:
    counter = _Counting(handle)
    if encoding == "bytes":
        view = memoryview(outputs).cast("B")  # count bytes, whatever the item size
        for start in range(0, len(view), CHUNK):
            counter.write(view[start : start + CHUNK])
    elif encoding == "text":
        for start in range(0, len(outputs), CHUNK):
            counter.write(outputs[start : start + CHUNK].encode("utf-8"))
    else:
        text = io.TextIOWrapper(io.BufferedWriter(counter, CHUNK), encoding="utf-8")
        json.dump(outputs, text, separators=(",", ":"), default=str)  # encodes piece by piece
        text.flush()
        text.detach()
    return counter.size


ENCODINGS = ("json", "text", "bytes")


def decode_output(encoding: str, data: bytes) -> Any:
    """An output read back whole: JSON, text or bytes as written (never unpickled).

    Raises:
        ValueError: the data is not what the encoding says (or the encoding is unknown).
    """
    if encoding == "json":
        return json.loads(data)
    if encoding == "text":
        return data.decode("utf-8")
    if encoding == "bytes":
        return data
    raise ValueError(f"unknown encoding {encoding!r:.40}")


def _part(raw: Any) -> Part:
    if not isinstance(raw, dict) or set(raw) != _PART_KEYS:
        raise ValueError("not a part")
    part = Part(**raw)
    if (
        not isinstance(part.output_id, str)
        or not isinstance(part.mimetype, str)
        or part.encoding not in ENCODINGS
        or not isinstance(part.size, int)
        # Only the names we make: a manifest cannot point outside its job.
        or part.name not in (OUTPUT, part_name(part.output_id))
    ):
        raise ValueError("not a part")
    return part


def _strings(raw: Any) -> tuple[str, ...]:
    values = tuple(raw or ())
    if not all(isinstance(value, str) for value in values):
        raise ValueError("not a list of strings")
    return values


def _manifest(raw: Any) -> Manifest:
    # What the store holds is data, checked like any input: a manifest that
    # is not exactly ours (another encoding, other keys) is refused.
    if not isinstance(raw, dict) or not {"mimetype", "encoding", "size"} <= set(raw):
        raise ValueError("not a manifest")
    manifest = Manifest(
        mimetype=raw["mimetype"],
        encoding=raw["encoding"],
        size=raw["size"],
        response=raw.get("response", "raw"),
        output_ids=_strings(raw.get("output_ids")),
        parts=tuple(_part(part) for part in raw.get("parts") or ()),
        references=_strings(raw.get("references")),
        requested=_strings(raw.get("requested")),
        whole=raw.get("whole", True),
    )
    if (
        not isinstance(manifest.mimetype, str)
        or manifest.encoding not in ENCODINGS
        or not isinstance(manifest.size, int)
        or manifest.response not in ("raw", "document")
        or not isinstance(manifest.whole, bool)
    ):
        raise ValueError("not a manifest")
    return manifest


def _part_mimetype(value: Any, mimetype: str) -> str:
    # One output of several: the job's media type where it fits the value.
    if isinstance(value, bytes | bytearray | memoryview):
        return mimetype if mimetype not in _JSON_TYPES else "application/octet-stream"
    if isinstance(value, str):
        return mimetype if mimetype not in _JSON_TYPES else "text/plain"
    return "application/json"


def declared_media_types(outputs: Any) -> dict[str, str]:
    """The media type each output's description implies (``contentMediaType``, its type)."""
    found: dict[str, str] = {}
    for output_id, description in (outputs or {}).items() if isinstance(outputs, dict) else ():
        schema = (description or {}).get("schema") if isinstance(description, dict) else None
        if not isinstance(schema, dict):
            continue
        kind = schema.get("type")
        if isinstance(schema.get("contentMediaType"), str):
            found[output_id] = schema["contentMediaType"]
        elif kind == "string" and "contentEncoding" not in schema:
            found[output_id] = "text/plain"
        elif kind in ("object", "array", "number", "integer", "boolean"):
            found[output_id] = "application/json"
    return found


def split_outputs(
    outputs: Any,
    mimetype: str,
    output_ids: tuple[str, ...],
    media_types: dict[str, str] | None = None,
) -> list[tuple[str, str, Any, bool]]:
    """(output id, media type, value, is the whole output) of each output.

    The three shapes of :func:`results_document`: ``{"id", "value"}``, a map
    of declared output ids, a bare value (the one output, or ``result``).
    One output of several takes the media type its description implies
    (``media_types``), else the job's where it fits the value.
    """
    declared = media_types or {}

    def typed(key: str, value: Any) -> str:
        if key in declared and not isinstance(value, bytes | bytearray | memoryview):
            return declared[key]
        if key in declared and declared[key] not in ("text/plain", *_JSON_TYPES):
            return declared[key]
        return _part_mimetype(value, mimetype)

    if isinstance(outputs, dict):
        if set(outputs) == {"id", "value"} and isinstance(outputs["id"], str):
            value = outputs["value"]
            return [(outputs["id"], typed(outputs["id"], value), value, False)]
        if outputs and output_ids and set(outputs) <= set(output_ids):
            return [(key, typed(key, value), value, False) for key, value in outputs.items()]
    key = output_ids[0] if len(output_ids) == 1 else "result"
    return [(key, mimetype, outputs, True)]


class OutputWriter(io.RawIOBase):
    """A writable file object on the result store for one output of a job.

    Bytes go straight to the store (S3: a multipart upload, a block at a
    time); :attr:`part` is set once the writer is closed without error.
    """

    def __init__(
        self, handle: Any, part: Part, on_close: Callable[[Part], None] | None = None
    ) -> None:
        self._handle = handle
        self._part = part
        self._on_close = on_close
        self.size = 0
        self.part: Part | None = None
        self._failed = False

    def writable(self) -> bool:
        """Always: an output is written, never read back here."""
        return True

    def write(self, data: Any) -> int:
        """Write bytes (any bytes-like object); returns how many."""
        if self.closed:
            raise ValueError("write to a closed output")
        if isinstance(data, str):
            raise TypeError("outputs take bytes; encode text first")
        try:
            self._handle.write(data)
        except BaseException:
            self._failed = True
            raise
        written = memoryview(data).nbytes
        self.size += written
        return written

    def close(self) -> None:
        """Finish the object in the store (or drop it, after a failed write)."""
        if self.closed:
            return
        try:
            if self._failed:
                self._drop()
            else:
                self._handle.close()
                self.part = Part(
                    self._part.output_id,
                    self._part.mimetype,
                    self._part.encoding,
                    self.size,
                    self._part.name,
                )
                if self._on_close is not None:
                    self._on_close(self.part)
        finally:
            super().close()

    def _drop(self) -> None:
        # A failed output is no output: abort the upload (S3), or remove the
        # file. Never raises: the process's own error is what matters.
        handle = self._handle
        try:
            if not getattr(handle, "autocommit", True):
                handle.discard()
                return
            handle.close()
            handle.fs.rm(handle.path)
        except Exception:  # noqa: BLE001 - best effort, logged
            logger.warning("a failed output %r was not removed", self._part.output_id)

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        if exc_type is not None:
            self._failed = True
        self.close()


class ResultStore:
    """Job outputs under one fsspec URL.

    Example::

        store = ResultStore("s3://bucket/results", {"client_kwargs": {...}})
        store.write(job_id, "application/json", {"id": "echo", "value": "hi"})
        manifest, value = store.read(job_id)

    Args:
        url: fsspec URL of the store's root.
        storage_options: keyword arguments for the filesystem.

    """

    def __init__(
        self,
        url: str = "",
        storage_options: dict[str, Any] | None = None,
        *,
        block: str | None = None,
        api_url: str | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.storage_options = dict(storage_options or {})
        self.block = block
        self.api_url = api_url
        self._fs: AbstractFileSystem | None = None
        self._root = ""
        #: The process that opened ``_fs``: a forked child opens its own.
        self._pid = 0

    def _load_block(self) -> None:
        # A Prefect filesystem block (basepath + fsspec settings) names the
        # store; its credentials never appear in a pygeoapi config.
        from prefect.blocks.core import Block
        from prefect.settings import PREFECT_API_URL, temporary_settings

        updates = {PREFECT_API_URL: self.api_url} if self.api_url else {}
        try:
            with temporary_settings(updates=updates):
                found = Block.load(str(self.block))
        except Exception as exc:  # noqa: BLE001 - Prefect raises many kinds here
            raise ValueError(f"block {self.block!r} cannot be loaded: {exc}") from exc
        basepath = getattr(found, "basepath", None)
        if not basepath:
            raise ValueError(f"block {self.block!r} has no basepath: use a filesystem block")
        self.url = str(basepath).rstrip("/")
        settings = getattr(found, "settings", None) or {}
        if hasattr(settings, "get_secret_value"):
            settings = settings.get_secret_value()
        self.storage_options = dict(settings)

    def __repr__(self) -> str:
        return f"ResultStore({self.shown_url!r})"

    @property
    def shown_url(self) -> str:
        """The store's URL (or block name) for messages and logs: no credentials."""
        return without_credentials(self.url) if self.url else str(self.block)

    @property
    def fs(self) -> AbstractFileSystem:
        """The filesystem, opened on first use (and again in a forked child).

        An async filesystem such as s3fs refuses use in a process forked
        after it was opened ("not fork-safe": its event loop thread stayed
        behind), and fsspec keeps its instances per process: a job process
        forked from the template opens its own.
        """
        if self._fs is None or self._pid != os.getpid():
            from fsspec.core import url_to_fs

            with self._errors("open"):
                if self.block and not self.url:
                    self._load_block()
                self._fs, self._root = url_to_fs(self.url, **self.storage_options)
                self._pid = os.getpid()
        return self._fs

    @staticmethod
    def key(job_id: str, owner: str | None) -> str:
        """The store key of a job's results: ``<owner space>/<job id>``, or the id alone.

        ``owner`` is the owner tag of the job's flow run
        (:mod:`pygeoapi_prefect.jobs.owners`): each owner's results live
        under a prefix of their own (a bucket policy or a deletion can then
        take a user's results as a whole). Every method taking a ``job_id``
        takes such a key.
        """
        return f"{space_of(owner)}/{job_id}" if owner else job_id

    def _path(self, job_id: str, name: str) -> str:
        # Defence in depth: only a canonical UUID (after an owner space made
        # by key()) becomes a key, so no job id can name anything outside
        # <store>/[<space>/]<uuid>/.
        space, _, bare = job_id.rpartition("/")
        try:
            canonical = str(uuid.UUID(bare))
        except (ValueError, TypeError, AttributeError) as exc:
            raise ResultNotFound(f"No results are stored for job {job_id!r}") from exc
        if canonical != bare or (space and not _SPACE.fullmatch(space)):
            raise ResultNotFound(f"No results are stored for job {job_id!r}")
        self.fs  # noqa: B018 - sets self._root
        return f"{self._root}/{job_id}/{name}"

    def _secrets(self) -> list[str]:
        # What must not reach a log: the URL's user:password, credential options.
        found = []
        try:
            parts = urlsplit(self.url)
            found += [part for part in (parts.username, parts.password) if part]
        except ValueError:
            pass
        found += credential_values(self.storage_options)
        return [secret for secret in found if len(secret) >= 4]

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except (FileNotFoundError, ResultNotFound):
            raise
        except (OSError, ValueError, ImportError) as exc:
            secrets = self._secrets()
            if secrets:
                # The error's text may quote the URL or options: no traceback.
                text = str(exc)
                for secret in secrets:
                    text = text.replace(secret, "***")
                logger.error("result store %s failed to %s: %s", self.shown_url, what, text)
            else:
                logger.exception("result store %s failed to %s", self.shown_url, what)
            raise ResultStoreError(
                f"The result store {self.shown_url} failed to {what}: {exc.__class__.__name__}"
            ) from exc

    def write(
        self,
        job_id: str,
        mimetype: str,
        outputs: Any,
        *,
        response: str = "raw",
        output_ids: tuple[str, ...] = (),
        references: Iterable[str] = (),
        requested: Iterable[str] = (),
        streamed: Iterable[Part] = (),
        media_types: dict[str, str] | None = None,
    ) -> Manifest:
        """Store a job's output, streamed; the manifest is written last, as a commit marker.

        ``streamed`` are outputs the process wrote itself (:meth:`open_output`);
        ``outputs`` None with some of those: the process returned nothing else.
        """
        streamed = tuple(streamed)
        whole = outputs is not None or not streamed
        encoding, size = encoding_of(outputs), 0
        parts: dict[str, Part] = {}
        with self._errors(f"write the results of job {job_id}"):
            self.fs.makedirs(self._path(job_id, ""), exist_ok=True)
            # A rewrite (a retried run) first withdraws the old manifest, so
            # nobody reads the new output half-written under it.
            if self.fs.exists(self._path(job_id, MANIFEST)):
                self.fs.rm(self._path(job_id, MANIFEST))
            if whole:
                with self.fs.open(self._path(job_id, OUTPUT), "wb") as handle:
                    size = _write_output(handle, encoding, outputs)
                for output_id, part_type, value, is_whole in split_outputs(
                    outputs, mimetype, output_ids, media_types
                ):
                    if is_whole:
                        parts[output_id] = Part(output_id, part_type, encoding, size, OUTPUT)
                        continue
                    name = part_name(output_id)
                    self.fs.makedirs(self._path(job_id, "outputs"), exist_ok=True)
                    with self.fs.open(self._path(job_id, name), "wb") as handle:
                        part_size = _write_output(handle, encoding_of(value), value)
                    parts[output_id] = Part(
                        output_id, part_type, encoding_of(value), part_size, name
                    )
            for part in streamed:
                parts[part.output_id] = part
            if not whole:
                first = next(iter(parts.values()))
                mimetype, encoding = first.mimetype, first.encoding
                size = sum(part.size for part in parts.values())
            manifest = Manifest(
                mimetype,
                encoding,
                size,
                response,
                tuple(output_ids),
                tuple(parts.values()),
                tuple(references),
                tuple(requested),
                whole,
            )
            self.fs.pipe_file(self._path(job_id, MANIFEST), json.dumps(asdict(manifest)).encode())
        return manifest

    def open_output(
        self,
        job_id: str,
        output_id: str,
        mimetype: str,
        *,
        on_close: Callable[[Part], None] | None = None,
    ) -> OutputWriter:
        """A writable file object for one output of a job, straight into the store."""
        if not isinstance(output_id, str) or not output_id:
            raise ValueError("an output id is a non-empty string")
        name = part_name(output_id)
        with self._errors(f"write output {output_id!r} of job {job_id}"):
            self.fs.makedirs(self._path(job_id, "outputs"), exist_ok=True)
            # Blocks of OUTPUT_BLOCK: an S3 multipart upload holds one in memory.
            handle = self.fs.open(self._path(job_id, name), "wb", block_size=OUTPUT_BLOCK)
        return OutputWriter(handle, Part(output_id, mimetype, "bytes", 0, name), on_close)

    def iter_output(self, job_id: str) -> Iterator[bytes]:
        """The stored output's bytes, a chunk at a time (for streaming responses)."""
        path = self._path(job_id, OUTPUT)
        with self._errors(f"read the results of job {job_id}"):
            handle = self.fs.open(path, "rb")
        with handle:
            while chunk := handle.read(CHUNK):
                yield chunk

    def iter_part(self, job_id: str, part: Part) -> Iterator[bytes]:
        """One output's stored bytes, a chunk at a time (a block of READ_BLOCK read ahead)."""
        path = self._path(job_id, part.name)
        with self._errors(f"read output {part.output_id!r} of job {job_id}"):
            handle = self.fs.open(path, "rb", block_size=READ_BLOCK, cache_type="readahead")
        with handle:
            while chunk := handle.read(CHUNK):
                yield chunk

    def read_part(self, job_id: str, part: Part) -> Any:
        """One output, decoded (JSON, text or bytes)."""
        try:
            with self._errors(f"read output {part.output_id!r} of job {job_id}"):
                data = self.fs.cat_file(self._path(job_id, part.name))
        except FileNotFoundError as exc:
            raise ResultNotFound(f"No results are stored for job {job_id}") from exc
        try:
            return decode_output(part.encoding, data)
        except ValueError as exc:
            raise ResultStoreError(
                f"Output {part.output_id!r} of job {job_id} is corrupt in the result store "
                f"{self.shown_url}"
            ) from exc

    def sign(self, job_id: str, part: Part, seconds: int) -> str | None:
        """A presigned URL of one output, valid ``seconds``; ``None`` if the store cannot sign."""
        path = self._path(job_id, part.name)
        try:
            with self._errors(f"sign output {part.output_id!r} of job {job_id}"):
                return str(self.fs.sign(path, expiration=seconds))
        except NotImplementedError:
            return None

    def read_manifest(self, job_id: str) -> Manifest:
        """The manifest of a job's output.

        Raises:
            ResultNotFound: the store has no (complete) output for this job.

        """
        try:
            with self._errors(f"read the results of job {job_id}"):
                data = self.fs.cat_file(self._path(job_id, MANIFEST))
        except FileNotFoundError as exc:
            raise ResultNotFound(f"No results are stored for job {job_id}") from exc
        try:
            return _manifest(json.loads(data))
        except (ValueError, TypeError) as exc:
            logger.error("result store %s: job %s has a corrupt manifest", self.shown_url, job_id)
            raise ResultStoreError(
                f"The results of job {job_id} are corrupt in the result store "
                f"{self.shown_url} (manifest)"
            ) from exc

    def read(self, job_id: str) -> tuple[Manifest, Any]:
        """The manifest and the decoded output of a job."""
        manifest = self.read_manifest(job_id)
        try:
            with self._errors(f"read the results of job {job_id}"):
                data = self.fs.cat_file(self._path(job_id, OUTPUT))
        except FileNotFoundError as exc:
            raise ResultNotFound(f"No results are stored for job {job_id}") from exc
        try:
            return manifest, decode_output(manifest.encoding, data)
        except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError too
            logger.error("result store %s: the output of job %s is corrupt", self.shown_url, job_id)
            raise ResultStoreError(
                f"The results of job {job_id} are corrupt in the result store "
                f"{self.shown_url} (not {manifest.encoding} as its manifest says)"
            ) from exc

    def delete(self, job_id: str) -> None:
        """Remove a job's output (a no-op when there is none)."""
        with self._errors(f"delete the results of job {job_id}"):
            try:
                self.fs.rm(self._path(job_id, ""), recursive=True)
            except FileNotFoundError:
                pass

    def exists(self, job_id: str) -> bool:
        """Whether a complete output is stored for the job."""
        with self._errors(f"look up the results of job {job_id}"):
            return bool(self.fs.exists(self._path(job_id, MANIFEST)))


def inline_value(value: Any, mimetype: str) -> Any:
    """An output as a results document holds it (OGC 1.0 inlineOrRefData)."""
    # Plain values inline, anything else qualified.
    if isinstance(value, bytes):
        return {
            "value": base64.b64encode(value).decode("ascii"),
            "encoding": "base64",
            "mediaType": mimetype,
        }
    if isinstance(value, dict):
        return {"value": value, "mediaType": "application/json"}
    if isinstance(value, str) and mimetype not in ("application/json", "text/plain"):
        return {"value": value, "mediaType": mimetype}
    return value


def results_document(
    outputs: Any,
    mimetype: str,
    output_ids: tuple[str, ...],
    media_types: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The OGC 1.0 results document of outputs held in memory: a map keyed by output id.

    pygeoapi processes return their output in one of three shapes, each
    handled here: ``{"id": <output id>, "value": ...}`` (the convention of
    pygeoapi's own examples), a map of output ids to values, or a bare value
    (for a process with one declared output); see :func:`split_outputs`.
    """
    return {
        output_id: inline_value(value, part_type)
        for output_id, part_type, value, _ in split_outputs(
            outputs, mimetype, output_ids, media_types
        )
    }
