"""``multipart/related`` bodies (RFC 2387) of a job's outputs, made part by part.

OGC API - Processes 1.0 answers ``"response": "raw"`` with more than one
output this way: ``/req/core/process-execute-sync-raw-value-multi`` (every
output by value) and ``/req/core/process-execute-sync-raw-mixed-multi``
(values and references), and the same for ``GET /jobs/{jobId}/results`` of
an async job (``/req/core/job-results-async-raw-value-multi``,
``/req/core/job-results-async-raw-mixed-multi``). Each output is one part
whose ``Content-ID`` is the output's id and whose ``Content-Type`` is its
own; a part by value carries the output's bytes (and its
``Content-Length``), a part by reference an empty body and a
``Content-Location`` naming the output.

The body is a generator: a part's bytes are read from their source only
when the part is sent, a chunk at a time, so no output is ever held whole.
Example::

    content_type, body, size = related([
        Section("text", "text/plain", 5, lambda: iter([b"hello"])),
        Section("image", "image/tiff", None, href="https://bucket.example/image.tif"),
    ])
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from urllib.parse import quote

__all__ = ["Section", "content_id", "header_text", "related"]

#: What a ``Content-ID`` keeps as it is (RFC 5322 ``dot-atom-text`` and ``@``):
#: anything else, a control character or non-ASCII, is percent-encoded (the
#: ``cid:`` URL form of RFC 2392), so no output id can end a header line.
_CID_SAFE = "!#$&'*+-/=?^_`{|}~.@"
_CRLF = b"\r\n"


@dataclass(frozen=True)
class Section:
    """One output as one part: by value (``chunks``) or by reference (``href``).

    ``size`` is the number of bytes ``chunks`` yields (``None``: not known;
    the body then has no total size either).
    """

    output_id: str
    mimetype: str
    size: int | None
    chunks: Callable[[], Iterator[bytes]] | None = None
    href: str | None = None


def header_text(text: str) -> str:
    """``text`` fit for one header line: control characters and non-ASCII percent-encoded."""
    if text.isascii() and text.isprintable():
        return text
    return "".join(c if c.isascii() and c.isprintable() else quote(c, safe="") for c in text)


def content_id(output_id: str) -> str:
    """The ``Content-ID`` of an output's part: ``<output id>`` (RFC 2045 ``msg-id`` form)."""
    return f"<{quote(output_id, safe=_CID_SAFE)}>"


def _bare(mimetype: str) -> str:
    # The `type` parameter is a quoted string holding type/subtype only.
    return header_text(mimetype.split(";")[0].strip()).replace('"', "").replace("\\", "")


def _head(boundary: str, section: Section) -> bytes:
    lines = [
        f"--{boundary}",
        f"Content-ID: {content_id(section.output_id)}",
        f"Content-Type: {header_text(section.mimetype)}",
    ]
    if section.href is not None:
        lines.append(f"Content-Location: {header_text(section.href)}")
        lines.append("Content-Length: 0")
    elif section.size is not None:
        lines.append(f"Content-Length: {section.size}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def related(
    sections: Sequence[Section], boundary: str | None = None
) -> tuple[str, Iterator[bytes], int | None]:
    """(the ``Content-Type``, the body's chunks, its size if known) of ``sections``.

    The first part is the root (RFC 2387 without ``start``); the ``type``
    parameter, which RFC 2387 requires, is its media type. The boundary is
    random (128 bits), so no output can contain it by chance.
    """
    boundary = boundary or f"pygeoapi-{uuid.uuid4().hex}"
    heads = [_head(boundary, section) for section in sections]
    tail = f"--{boundary}--\r\n".encode("ascii")
    sizes: Iterable[int | None] = (
        0 if section.href is not None else section.size for section in sections
    )
    known = [size for size in sizes if size is not None]
    total: int | None = None
    if len(known) == len(sections):
        total = sum(len(head) + len(_CRLF) for head in heads) + sum(known) + len(tail)

    def body() -> Iterator[bytes]:
        for head, section in zip(heads, sections, strict=True):
            yield head
            if section.href is None and section.chunks is not None:
                yield from section.chunks()
            # The line break before the next delimiter belongs to the delimiter.
            yield _CRLF
        yield tail

    root = _bare(sections[0].mimetype) if sections else "application/octet-stream"
    return f'multipart/related; boundary="{boundary}"; type="{root}"', body(), total
