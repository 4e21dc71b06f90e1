"""The file stores: the data directory and the database (SQLite and PostgreSQL) keep the same
promises: streamed writes under a limit, atomic publication, never overwriting, byte
ranges across chunk edges, safe names, no leftovers, and memory bounded by a chunk."""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from pathlib import Path

import pytest

from chargetwin.database import Database
from chargetwin.files import (
    CHUNK_BYTES,
    DatabaseFileStore,
    DataDirFileStore,
    FileStore,
    FileTooLargeError,
    StoredFile,
    open_file_store,
    renamed,
    resolve_kind,
)
from chargetwin.paths import UnsafePathError

DATA = bytes(range(251)) * (CHUNK_BYTES * 3 // 251)  # 3 chunks less a little, odd stride


@pytest.fixture(params=["data-dir", "database"])
async def store(request: pytest.FixtureRequest, db: Database, tmp_path: Path) -> FileStore:
    files: FileStore = (
        DataDirFileStore(tmp_path / "files")
        if request.param == "data-dir"
        else DatabaseFileStore(db)
    )
    await files.create_schema()
    return files


async def save(
    store: FileStore, folder: str, name: str, data: bytes, *, exists: str = "keep"
) -> StoredFile:
    async with store.upload(folder, max_bytes=len(data) + 1) as upload:
        for at in range(0, len(data), 65_536):  # the pieces a request stream arrives in
            await upload.write(data[at : at + 65_536])
        return await upload.commit(name, exists=exists)  # type: ignore[arg-type]


async def content(
    store: FileStore, file: StoredFile, start: int = 0, end: int | None = None
) -> bytes:
    return b"".join([chunk async for chunk in store.read(file, start, end)])


async def test_a_file_is_written_listed_read_by_range_and_deleted(store: FileStore) -> None:
    stored = await save(store, "firmware", "image.bin", DATA)
    assert (stored.folder, stored.name, stored.size) == ("firmware", "image.bin", len(DATA))
    assert stored.modified_at == pytest.approx(time.time(), abs=60)
    assert await store.stat("firmware", "image.bin") is not None
    assert await content(store, stored) == DATA
    for start, end in [
        (0, 1),
        (CHUNK_BYTES - 1, CHUNK_BYTES + 1),  # across the first edge
        (CHUNK_BYTES, 2 * CHUNK_BYTES),  # exactly one chunk
        (10, len(DATA)),
        (2 * CHUNK_BYTES + 5, len(DATA) + 100),  # past the end: up to the end
        (7, 7),
    ]:
        assert await content(store, stored, start, end) == DATA[start:end], (start, end)

    await asyncio.sleep(0.01)
    newer = await save(store, "firmware", "newer.bin", b"small")
    assert [f.name for f in await store.list("firmware")] == ["newer.bin", "image.bin"]
    assert await store.list("elsewhere") == []
    assert await store.delete("firmware", "image.bin") is True
    assert await store.delete("firmware", "image.bin") is False
    assert await store.stat("firmware", "image.bin") is None
    assert await store.list("firmware") == [await store.stat("firmware", "newer.bin")]
    assert await content(store, newer) == b"small"


async def test_keep_leaves_the_stored_file_and_rename_never_overwrites(store: FileStore) -> None:
    first = await save(store, "diagnostics/CP-1", "log.txt", b"first")
    kept = await save(store, "diagnostics/CP-1", "log.txt", b"second")
    assert kept.name == "log.txt" and await content(store, kept) == b"first"

    renamed_files = await asyncio.gather(
        *(save(store, "diagnostics/CP-1", "log.txt", f"n{i}".encode(), exists="rename")
          for i in range(4))
    )  # fmt: skip
    names = sorted(f.name for f in renamed_files)
    assert names == ["log-1.txt", "log-2.txt", "log-3.txt", "log-4.txt"]
    bodies = {await content(store, f) for f in renamed_files}
    assert bodies == {b"n0", b"n1", b"n2", b"n3"}
    assert await content(store, first) == b"first"
    assert len(await store.list("diagnostics/CP-1")) == 5
    assert renamed("README", 2) == "README-2" and renamed(".profile", 1) == ".profile-1"


async def test_an_upload_past_its_limit_or_not_committed_leaves_nothing(
    store: FileStore, db: Database, tmp_path: Path
) -> None:
    with pytest.raises(FileTooLargeError):
        async with store.upload("diagnostics/CP-1", max_bytes=CHUNK_BYTES + 10) as upload:
            await upload.write(b"x" * CHUNK_BYTES)
            assert upload.size == CHUNK_BYTES
            await upload.write(b"x" * 11)
    async with store.upload("diagnostics/CP-1", max_bytes=10 * CHUNK_BYTES) as upload:
        await upload.write(b"y" * (2 * CHUNK_BYTES))  # abandoned: never committed
    with pytest.raises(RuntimeError, match="mid-upload"):
        async with store.upload("diagnostics/CP-1", max_bytes=10 * CHUNK_BYTES) as upload:
            await upload.write(b"z" * (CHUNK_BYTES + 1))
            raise RuntimeError("mid-upload")

    assert await store.list("diagnostics/CP-1") == []
    if isinstance(store, DatabaseFileStore):
        assert await db.fetchall("SELECT blob_id FROM stored_file_chunks") == []
    else:
        leftovers = list((tmp_path / "files").rglob("*"))
        assert all(p.is_dir() for p in leftovers), leftovers


@pytest.mark.parametrize(
    ("folder", "name"),
    [
        ("diagnostics/..", "x"),
        ("..", "x"),
        ("diagnostics/CP-1", ".."),
        ("diagnostics/CP-1", "../x"),
        ("diagnostics/CP-1", "a/b"),
        ("diagnostics/CP-1", "a\\b"),
        ("diagnostics//CP-1", "x"),
        ("/etc", "passwd"),
        ("diagnostics/CP-1", "a\0b"),
    ],
)
async def test_names_that_are_not_plain_segments_are_refused(
    store: FileStore, folder: str, name: str
) -> None:
    with pytest.raises(UnsafePathError):
        await store.stat(folder, name)
    with pytest.raises(UnsafePathError):
        await store.delete(folder, name)
    with pytest.raises(UnsafePathError):
        async with store.upload(folder, max_bytes=10) as upload:
            await upload.write(b"x")
            await upload.commit(name)


async def test_the_database_store_sweeps_chunks_of_uploads_a_dead_process_left(
    db: Database,
) -> None:
    store = DatabaseFileStore(db, abandoned_after=3600)
    await store.create_schema()
    kept = await save(store, "firmware", "a.bin", b"kept")
    old, young = time.time() - 7200, time.time()
    await db.execute("UPDATE stored_file_chunks SET written_at = ?", (old,))  # a stored file's
    for blob_id, written_at in (("dead", old), ("in-progress", young)):
        await db.execute(
            "INSERT INTO stored_file_chunks (blob_id, seq, data, written_at) VALUES (?, 0, ?, ?)",
            (blob_id, b"partial", written_at),
        )
    assert await store.sweep() == 1
    left = {r[0] for r in await db.fetchall("SELECT blob_id FROM stored_file_chunks")}
    assert "dead" not in left and "in-progress" in left and len(left) == 2
    assert await content(store, kept) == b"kept"  # an old chunk of a stored file stays
    await store.create_schema()  # start-up sweeps too, and is idempotent


async def test_memory_stays_near_one_chunk_whatever_the_size(store: FileStore) -> None:
    """A 24 MiB file through write and read never has much more than a chunk in memory."""
    size = 24 * CHUNK_BYTES
    piece = b"\xa5" * 65_536
    tracemalloc.start()
    try:
        async with store.upload("firmware", max_bytes=size) as upload:
            for _ in range(size // len(piece)):
                await upload.write(piece)
            stored = await upload.commit("big.bin")
        read = 0
        async for chunk in store.read(stored):
            read += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert read == size
    assert peak < 6 * CHUNK_BYTES, f"peak {peak} bytes for a {size}-byte file"


async def test_auto_is_the_database_on_postgresql_and_the_data_dir_on_sqlite(
    db: Database, tmp_path: Path
) -> None:
    on_postgres = db.url.startswith("postgresql")
    assert resolve_kind("auto", db) == ("database" if on_postgres else "data-dir")
    assert resolve_kind("data-dir", db) == "data-dir"
    assert resolve_kind("database", db) == "database"
    assert isinstance(open_file_store("data-dir", db, tmp_path), DataDirFileStore)
    assert isinstance(open_file_store("database", db, tmp_path), DatabaseFileStore)
