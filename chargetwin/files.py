"""Files every API replica can read: firmware images and diagnostics uploads.

Two stores behind one small interface (:class:`FileStore`), chosen by ``--file-store``:

- :class:`DataDirFileStore` keeps files in the data directory (``DATA_DIR/FOLDER/NAME``):
  the embedded mode, one process or several sharing one disk.
- :class:`DatabaseFileStore` keeps them in the database, in chunks of :data:`CHUNK_BYTES`
  (``stored_file_chunks``) named by one row each (``stored_files``): every API replica on
  one PostgreSQL reads what any of them received. It works on SQLite too (the files then
  live in the SQLite file), but ``auto`` keeps the data directory there.

Neither ever holds a whole file in memory: writes go through an :class:`Upload` (chunks
in, SHA-256 and size counted on the way, published under its name only by
:meth:`Upload.commit`, so nobody reads a half-written file), reads are an async iterator
of chunks over a byte range.

Names: a folder is one or more plain segments joined by ``/`` (``firmware``,
``diagnostics/CP-0001``), a name is one plain segment. Both come from outside (digests,
charger ids, file names): a segment that is empty, ``.``, ``..`` or holds ``/``, ``\\`` or
NUL raises :class:`~chargetwin.paths.UnsafePathError` in both stores, and the data-dir store
builds every path with :func:`chargetwin.paths.inside`.

Errors: :class:`FileTooLargeError` (a write passed its limit), :class:`FileStoreError`
(a stored file is unreadable, e.g. removed while read).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import secrets
import stat
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal, Protocol

from chargetwin.database import Database
from chargetwin.paths import UnsafePathError, inside

__all__ = [
    "CHUNK_BYTES",
    "DataDirFileStore",
    "DatabaseFileStore",
    "FileStore",
    "FileStoreError",
    "FileTooLargeError",
    "StoredFile",
    "Upload",
    "open_file_store",
]

log = logging.getLogger(__name__)

CHUNK_BYTES = 1024 * 1024
"""Bytes per stored chunk (database) and per read (both stores)."""

ABANDONED_AFTER_S = 24 * 3600.0
"""Chunks of an upload that never committed (its process was killed) are swept after this."""

FileStoreKind = Literal["auto", "data-dir", "database"]
OnExists = Literal["keep", "rename"]

SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS stored_files (
    folder TEXT NOT NULL,
    name TEXT NOT NULL,
    blob_id TEXT NOT NULL,
    size BIGINT NOT NULL,
    chunk_bytes INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (folder, name)
)
""",
    """
CREATE TABLE IF NOT EXISTS stored_file_chunks (
    blob_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    data BYTEA NOT NULL,
    written_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (blob_id, seq)
)
""",
    "CREATE INDEX IF NOT EXISTS stored_files_blob ON stored_files (blob_id)",
)


class FileStoreError(RuntimeError):
    """A stored file cannot be read (removed or replaced while it was read)."""


class FileTooLargeError(ValueError):
    """A write went past its size limit; nothing of it is kept."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"larger than {limit} bytes")
        self.limit = limit


@dataclass(frozen=True, slots=True)
class StoredFile:
    """One stored file; ``sha256`` is None when the store does not know it (data dir)."""

    folder: str
    name: str
    size: int
    modified_at: float
    sha256: str | None = None


class Upload(Protocol):
    """A file being written: :meth:`write` chunks, then :meth:`commit` it under a name."""

    size: int

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of everything written so far."""
        ...

    async def write(self, data: bytes) -> None:
        """Append ``data``; raises :class:`FileTooLargeError` past the limit."""
        ...

    async def commit(self, name: str, *, exists: OnExists = "keep") -> StoredFile:
        """Publish what was written as ``folder/name``.

        When that name is taken: ``keep`` leaves the stored file and returns it (content-
        addressed names: it is the same content), ``rename`` takes ``stem-1.ext``,
        ``stem-2.ext``... (never overwrites). Atomic against other writers, in any process.
        """
        ...


class FileStore(Protocol):
    kind: str

    async def create_schema(self) -> None: ...

    def upload(
        self, folder: str, *, max_bytes: int
    ) -> contextlib.AbstractAsyncContextManager[Upload]:
        """A new upload into ``folder``; whatever is not committed is discarded on exit."""
        ...

    async def stat(self, folder: str, name: str) -> StoredFile | None: ...

    async def list(self, folder: str) -> list[StoredFile]:
        """The files of ``folder``, newest first."""
        ...

    def read(
        self, file: StoredFile, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        """Bytes ``start`` up to (not including) ``end`` of ``file``, in chunks."""
        ...

    async def delete(self, folder: str, name: str) -> bool: ...


def check_segment(part: str) -> str:
    """``part`` when it is one plain path segment, else :class:`UnsafePathError`."""
    if part in ("", ".", "..") or "/" in part or "\\" in part or "\0" in part:
        raise UnsafePathError(f"{part!r} is not a plain file or folder name")
    return part


def _segments(folder: str) -> list[str]:
    return [check_segment(p) for p in folder.split("/")]


def renamed(name: str, n: int) -> str:
    """``log.txt`` -> ``log-1.txt`` (n=1); names without an extension get ``-n`` appended."""
    if n == 0:
        return name
    stem, dot, ext = name.rpartition(".") if "." in name[1:] else (name, "", "")
    return f"{stem}-{n}{dot}{ext}"


class _Counter:
    """Size limit and SHA-256 of what an upload has seen."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._sha = hashlib.sha256()

    def count(self, data: bytes) -> None:
        if self.size + len(data) > self.max_bytes:
            raise FileTooLargeError(self.max_bytes)
        self.size += len(data)
        self._sha.update(data)

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()


# --- the data directory ------------------------------------------------------------------
class _DataDirUpload:
    def __init__(
        self, store: DataDirFileStore, folder: str, out: BinaryIO, temp: Path, max_bytes: int
    ) -> None:
        self._store = store
        self._folder = folder
        self._out = out
        self._temp = temp
        self._counter = _Counter(max_bytes)
        self.size = 0

    @property
    def sha256(self) -> str:
        return self._counter.sha256

    async def write(self, data: bytes) -> None:
        self._counter.count(data)
        self.size = self._counter.size
        await asyncio.to_thread(self._out.write, data)

    async def commit(self, name: str, *, exists: OnExists = "keep") -> StoredFile:
        check_segment(name)
        await asyncio.to_thread(self._out.flush)
        folder = self._store.path(self._folder)
        n = 0
        while True:
            target = inside(folder, renamed(name, n))
            if await asyncio.to_thread(_link_new, self._temp, target):
                break
            if exists == "keep":
                break
            n += 1
        stored = await self._store.stat(self._folder, target.name)
        if stored is None:
            raise FileStoreError(f"{target} vanished right after it was written")
        return stored


def _link_new(temp: Path, target: Path) -> bool:
    """Give ``temp``'s content the name ``target`` unless it exists (atomically); True if so."""
    try:
        os.link(temp, target)
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        # A file system without hard links: check, then rename (a race can overwrite).
        if target.exists():
            return False
        temp.replace(target)
        return True
    return True


class DataDirFileStore:
    """Files under ``root`` (the data directory): ``root/FOLDER/NAME``."""

    kind = "data-dir"

    def __init__(self, root: Path) -> None:
        self.root = root
        self._resolved_root: Path | None = None  # root.resolve(), once it exists

    async def create_schema(self) -> None:
        return None

    def path(self, folder: str, name: str | None = None) -> Path:
        """The folder (or file) path, proven inside ``root``."""
        parts = _segments(folder) + ([check_segment(name)] if name is not None else [])
        if self._resolved_root is None and self.root.exists():
            self._resolved_root = self.root.resolve()
        return inside(self.root, *parts, resolved_folder=self._resolved_root)

    @contextlib.asynccontextmanager
    async def upload(self, folder: str, *, max_bytes: int) -> AsyncIterator[Upload]:
        path = self.path(folder)
        await asyncio.to_thread(path.mkdir, parents=True, exist_ok=True)
        fd, temp_name = await asyncio.to_thread(tempfile.mkstemp, dir=path, prefix=".upload-")
        temp = Path(temp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                yield _DataDirUpload(self, folder, out, temp, max_bytes)
        finally:
            await asyncio.to_thread(temp.unlink, missing_ok=True)

    async def stat(self, folder: str, name: str) -> StoredFile | None:
        path = self.path(folder, name)
        try:
            info = await asyncio.to_thread(path.stat)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat.S_ISREG(info.st_mode) or name.startswith("."):
            return None
        return StoredFile(folder, name, info.st_size, info.st_mtime)

    async def list(self, folder: str) -> list[StoredFile]:
        path = self.path(folder)

        def _scan() -> list[StoredFile]:
            if not path.is_dir():
                return []
            found = []
            for entry in path.iterdir():
                if entry.is_file() and not entry.name.startswith("."):
                    info = entry.stat()
                    found.append(StoredFile(folder, entry.name, info.st_size, info.st_mtime))
            return found

        files = await asyncio.to_thread(_scan)
        return sorted(files, key=lambda f: f.modified_at, reverse=True)

    async def read(
        self, file: StoredFile, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        stop = file.size if end is None else min(end, file.size)
        path = self.path(file.folder, file.name)
        want = min(CHUNK_BYTES, max(0, stop - start))
        try:
            # Open, seek and the first chunk in one trip to a thread: a firmware image of
            # up to a chunk (most are) costs one hand-off, where each step was one.
            handle, chunk = await asyncio.to_thread(_open_at, path, start, want)
        except FileNotFoundError as exc:
            raise FileStoreError(f"{file.folder}/{file.name} was removed") from exc
        try:
            position = start
            while position < stop:
                if not chunk:
                    raise FileStoreError(f"{file.folder}/{file.name} is shorter than it was")
                position += len(chunk)
                yield chunk
                if position < stop:
                    chunk = await asyncio.to_thread(handle.read, min(CHUNK_BYTES, stop - position))
        finally:
            handle.close()

    async def delete(self, folder: str, name: str) -> bool:
        path = self.path(folder, name)
        try:
            await asyncio.to_thread(path.unlink)
        except FileNotFoundError:
            return False
        return True


def _open_at(path: Path, start: int, size: int) -> tuple[BinaryIO, bytes]:
    """``path`` opened for reading at ``start``, and its first ``size`` bytes from there."""
    handle = path.open("rb")
    try:
        handle.seek(start)
        return handle, handle.read(size)
    except BaseException:
        handle.close()
        raise


# --- the database --------------------------------------------------------------------------
class _DatabaseUpload:
    def __init__(self, store: DatabaseFileStore, folder: str, max_bytes: int) -> None:
        self._store = store
        self._folder = folder
        self._counter = _Counter(max_bytes)
        self._buffer = bytearray()
        self._seq = 0
        self.blob_id = secrets.token_hex(16)
        self.committed = False
        self.size = 0

    @property
    def sha256(self) -> str:
        return self._counter.sha256

    async def write(self, data: bytes) -> None:
        self._counter.count(data)
        self.size = self._counter.size
        self._buffer += data
        while len(self._buffer) >= CHUNK_BYTES:
            await self._put(bytes(self._buffer[:CHUNK_BYTES]))
            del self._buffer[:CHUNK_BYTES]

    async def _put(self, chunk: bytes) -> None:
        await self._store.db.execute(
            "INSERT INTO stored_file_chunks (blob_id, seq, data, written_at) VALUES (?, ?, ?, ?)",
            (self.blob_id, self._seq, chunk, time.time()),
        )
        self._seq += 1

    async def commit(self, name: str, *, exists: OnExists = "keep") -> StoredFile:
        check_segment(name)
        if self._buffer:
            await self._put(bytes(self._buffer))
            self._buffer.clear()
        db = self._store.db
        taken: set[str] = set()
        if exists == "rename":
            rows = await db.fetchall(
                "SELECT name FROM stored_files WHERE folder = ?", (self._folder,)
            )
            taken = {r[0] for r in rows}
        n = 0
        while True:
            candidate = renamed(name, n)
            n += 1
            if candidate in taken:
                continue
            now = time.time()
            inserted = await db.execute(
                "INSERT INTO stored_files (folder, name, blob_id, size, chunk_bytes, sha256,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (folder, name) DO NOTHING",
                (self._folder, candidate, self.blob_id, self.size, CHUNK_BYTES, self.sha256, now),
            )
            if inserted == 1:
                self.committed = True
                return StoredFile(self._folder, candidate, self.size, now, self.sha256)
            if exists == "keep":
                stored = await self._store.stat(self._folder, candidate)
                if stored is not None:
                    return stored
                n -= 1  # removed in between: try the same name again


class DatabaseFileStore:
    """Files in the database, chunked, so every process on that database reads them."""

    kind = "database"

    def __init__(self, db: Database, *, abandoned_after: float = ABANDONED_AFTER_S) -> None:
        self.db = db
        self.abandoned_after = abandoned_after

    async def create_schema(self) -> None:
        for statement in SCHEMA:
            await self.db.execute(statement)
        await self.sweep()

    async def sweep(self) -> int:
        """Remove chunks of uploads that never committed (their process died mid-upload)."""
        removed = await self.db.execute(
            "DELETE FROM stored_file_chunks WHERE written_at < ? AND NOT EXISTS"
            " (SELECT 1 FROM stored_files f WHERE f.blob_id = stored_file_chunks.blob_id)",
            (time.time() - self.abandoned_after,),
        )
        if removed:
            log.info("removed %d chunk(s) of uploads that never finished", removed)
        return removed

    @contextlib.asynccontextmanager
    async def upload(self, folder: str, *, max_bytes: int) -> AsyncIterator[Upload]:
        _segments(folder)
        upload = _DatabaseUpload(self, folder, max_bytes)
        try:
            yield upload
        finally:
            if not upload.committed:  # failed, abandoned, or "keep" found a copy stored
                await self._drop_blob(upload.blob_id)

    async def _drop_blob(self, blob_id: str) -> None:
        await self.db.execute("DELETE FROM stored_file_chunks WHERE blob_id = ?", (blob_id,))

    async def stat(self, folder: str, name: str) -> StoredFile | None:
        _segments(folder)
        check_segment(name)
        row = await self.db.fetchone(
            "SELECT size, created_at, sha256 FROM stored_files WHERE folder = ? AND name = ?",
            (folder, name),
        )
        if row is None:
            return None
        return StoredFile(folder, name, int(row[0]), float(row[1]), str(row[2]))

    async def list(self, folder: str) -> list[StoredFile]:
        _segments(folder)
        rows = await self.db.fetchall(
            "SELECT name, size, created_at, sha256 FROM stored_files WHERE folder = ?"
            " ORDER BY created_at DESC, name",
            (folder,),
        )
        return [StoredFile(folder, r[0], int(r[1]), float(r[2]), str(r[3])) for r in rows]

    async def read(
        self, file: StoredFile, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        row = await self.db.fetchone(
            "SELECT blob_id, chunk_bytes, size FROM stored_files WHERE folder = ? AND name = ?",
            (file.folder, file.name),
        )
        if row is None:
            raise FileStoreError(f"{file.folder}/{file.name} was removed")
        blob_id, chunk_bytes, size = str(row[0]), int(row[1]), int(row[2])
        stop = size if end is None else min(end, size)
        position = start
        while position < stop:
            seq, offset = divmod(position, chunk_bytes)
            # One chunk per query: memory stays at one chunk whatever the file's size.
            found = await self.db.fetchone(
                "SELECT data FROM stored_file_chunks WHERE blob_id = ? AND seq = ?",
                (blob_id, seq),
            )
            if found is None:
                raise FileStoreError(f"{file.folder}/{file.name} was removed while read")
            data = bytes(found[0])[offset : offset + (stop - position)]
            if not data:
                raise FileStoreError(f"{file.folder}/{file.name} is shorter than recorded")
            position += len(data)
            yield data

    async def delete(self, folder: str, name: str) -> bool:
        _segments(folder)
        check_segment(name)
        async with self.db.transaction() as tx:
            rows = await tx.fetchall(
                "SELECT blob_id FROM stored_files WHERE folder = ? AND name = ?", (folder, name)
            )
            if not rows:
                return False
            await tx.execute(
                "DELETE FROM stored_files WHERE folder = ? AND name = ?", (folder, name)
            )
            await tx.execute("DELETE FROM stored_file_chunks WHERE blob_id = ?", (rows[0][0],))
        return True


def resolve_kind(kind: FileStoreKind, db: Database) -> Literal["data-dir", "database"]:
    """``auto`` is the database on PostgreSQL (several processes), else the data dir."""
    if kind != "auto":
        return kind
    return "database" if db.url.startswith(("postgresql://", "postgres://")) else "data-dir"


def open_file_store(kind: FileStoreKind, db: Database, data_dir: Path) -> FileStore:
    """The store ``--file-store`` names, on ``db`` or under ``data_dir``."""
    if resolve_kind(kind, db) == "database":
        return DatabaseFileStore(db)
    return DataDirFileStore(data_dir)
