"""The result store: each job's outputs on any fsspec filesystem.

Layout, under the store URL::

    <job id>/output          the process output, exactly as it returned it
    <job id>/manifest.json   media type, encoding, size, response mode

Nothing is pickled: outputs are JSON, text or bytes, and a reader never runs
code from the store. Job ids are UUIDs (checked before any path is built), so
no key can leave the store.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import uuid
from collections.abc import Iterator
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

__all__ = ["Manifest", "ResultStore", "results_document"]

MANIFEST = "manifest.json"
#: An owner space made by jobs.owners.space_of.
_SPACE = re.compile(r"[A-Za-z0-9_-]{1,40}-[0-9a-f]{8}")
OUTPUT = "output"


@dataclass(frozen=True)
class Manifest:
    """What the store knows about one job's output."""

    mimetype: str
    encoding: str  # "json", "text" or "bytes"
    size: int
    response: str = "raw"  # the OGC response mode the job was asked for
    output_ids: tuple[str, ...] = ()


#: Bytes written or read at a time: large outputs never need a second copy.
CHUNK = 1024 * 1024


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
        output_ids=tuple(raw.get("output_ids") or ()),
    )
    if (
        not isinstance(manifest.mimetype, str)
        or manifest.encoding not in ENCODINGS
        or not isinstance(manifest.size, int)
        or manifest.response not in ("raw", "document")
        or not all(isinstance(key, str) for key in manifest.output_ids)
    ):
        raise ValueError("not a manifest")
    return manifest


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
        """The filesystem, opened on first use."""
        if self._fs is None:
            from fsspec.core import url_to_fs

            with self._errors("open"):
                if self.block and not self.url:
                    self._load_block()
                self._fs, self._root = url_to_fs(self.url, **self.storage_options)
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
    ) -> Manifest:
        """Store a job's output, streamed; the manifest is written last, as a commit marker."""
        encoding = encoding_of(outputs)
        with self._errors(f"write the results of job {job_id}"):
            self.fs.makedirs(self._path(job_id, ""), exist_ok=True)
            # A rewrite (a retried run) first withdraws the old manifest, so
            # nobody reads the new output half-written under it.
            if self.fs.exists(self._path(job_id, MANIFEST)):
                self.fs.rm(self._path(job_id, MANIFEST))
            with self.fs.open(self._path(job_id, OUTPUT), "wb") as handle:
                size = _write_output(handle, encoding, outputs)
            manifest = Manifest(mimetype, encoding, size, response, tuple(output_ids))
            self.fs.pipe_file(self._path(job_id, MANIFEST), json.dumps(asdict(manifest)).encode())
        return manifest

    def iter_output(self, job_id: str) -> Iterator[bytes]:
        """The stored output's bytes, a chunk at a time (for streaming responses)."""
        path = self._path(job_id, OUTPUT)
        with self._errors(f"read the results of job {job_id}"):
            handle = self.fs.open(path, "rb")
        with handle:
            while chunk := handle.read(CHUNK):
                yield chunk

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


def _inline(value: Any, mimetype: str) -> Any:
    # OGC 1.0 inlineOrRefData: plain values inline, anything else qualified.
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


def results_document(outputs: Any, mimetype: str, output_ids: tuple[str, ...]) -> dict[str, Any]:
    """The OGC 1.0 results document: a map keyed by output id.

    pygeoapi processes return their output in one of three shapes, each
    handled here: ``{"id": <output id>, "value": ...}`` (the convention of
    pygeoapi's own examples), a map of output ids to values, or a bare value
    (for a process with one declared output).
    """
    if isinstance(outputs, dict):
        if set(outputs) == {"id", "value"} and isinstance(outputs["id"], str):
            return {outputs["id"]: _inline(outputs["value"], mimetype)}
        if outputs and output_ids and set(outputs) <= set(output_ids):
            return {key: _inline(value, mimetype) for key, value in outputs.items()}
    key = output_ids[0] if len(output_ids) == 1 else "result"
    return {key: _inline(outputs, mimetype)}
