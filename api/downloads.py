"""HTTP answers for stored files (:mod:`chargetwin.files`): HEAD, Range, If-Range, caching.

One answer for every file store, so a charger sees the same bytes and headers from any
replica whichever store holds the file. RFC 9110: a single byte range is answered 206
with ``Content-Range``; a range past the end 416 with ``Content-Range: bytes */SIZE``; a
malformed range, or a request for several ranges, is answered with the whole file (200), as
section 14.2 allows; ``If-Range`` that does not match the ``ETag`` or ``Last-Modified``
gets the whole file. The ``ETag`` is the file's SHA-256 when the store knows it.
"""

from __future__ import annotations

import hashlib
import re
from email.utils import formatdate
from urllib.parse import quote

from fastapi import Request, Response
from fastapi.responses import StreamingResponse

from api.problems import Problem
from chargetwin.files import CHUNK_BYTES, FileStore, FileStoreError, StoredFile

_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


class UnsatisfiableRangeError(ValueError):
    """A well-formed byte range that selects no byte of the file (answered 416)."""


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, end)`` (end exclusive) of one satisfiable range; None: send everything.

    Raises :class:`UnsatisfiableRangeError` for a well-formed range that selects no byte.
    """
    if header is None or (match := _RANGE.match(header)) is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # a suffix: the last N bytes
        length = int(last)
        if length == 0 or size == 0:
            raise UnsatisfiableRangeError
        return max(size - length, 0), size
    start = int(first)
    end = size if not last else int(last) + 1
    if last and end <= start:
        return None  # last-pos below first-pos: invalid, ignored (RFC 9110 14.1.1)
    if start >= size:
        raise UnsatisfiableRangeError
    return start, min(end, size)


def _etag(file: StoredFile) -> str:
    if file.sha256:
        return f'"{file.sha256}"'
    base = f"{file.modified_at}-{file.size}".encode()
    return f'"{hashlib.md5(base, usedforsecurity=False).hexdigest()}"'


async def stored_file_response(
    request: Request,
    store: FileStore,
    file: StoredFile,
    *,
    filename: str,
    headers: dict[str, str] | None = None,
    media_type: str = "application/octet-stream",
) -> Response:
    """The whole ``file``, or the byte range asked for, from ``store``: streamed when it
    spans more than one chunk of the store."""
    quoted = quote(filename)
    disposition = (
        f'attachment; filename="{filename}"'
        if quoted == filename
        else f"attachment; filename*=utf-8''{quoted}"
    )
    out = {
        **(headers or {}),
        "accept-ranges": "bytes",
        "content-disposition": disposition,
        "etag": _etag(file),
        "last-modified": formatdate(file.modified_at, usegmt=True),
    }
    if_range = request.headers.get("if-range")
    ranged = if_range is None or if_range in (out["etag"], out["last-modified"])
    try:
        span = byte_range(request.headers.get("range"), file.size) if ranged else None
    except UnsatisfiableRangeError:
        return Response(
            status_code=416,
            headers={"content-range": f"bytes */{file.size}", "accept-ranges": "bytes"},
        )
    status = 200
    start, end = 0, file.size
    if span is not None:
        status = 206
        start, end = span
        out["content-range"] = f"bytes {start}-{end - 1}/{file.size}"
    out["content-length"] = str(end - start)
    if request.method == "HEAD":
        return Response(status_code=status, headers=out, media_type=media_type)
    if end - start <= CHUNK_BYTES:
        # One chunk (most firmware images and logs): read before answering, which spares
        # the streaming response its task group and disconnect watcher (more than the
        # copy costs), and a file removed or cut short meanwhile gets a clear 404 instead
        # of a truncated body.
        try:
            body = b"".join([chunk async for chunk in store.read(file, start, end)])
        except FileStoreError as exc:
            raise Problem(404, str(exc), kind="file-changed") from exc
        return Response(body, status_code=status, headers=out, media_type=media_type)
    return StreamingResponse(
        store.read(file, start, end), status_code=status, headers=out, media_type=media_type
    )
