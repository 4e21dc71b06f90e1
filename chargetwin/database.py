"""The relational store under shadows and records: SQLite by default, PostgreSQL to scale out.

One small async interface over both, so each store module writes its SQL once: queries use
``?`` placeholders (rewritten to ``%s`` for PostgreSQL) and only the SQL both engines share
(``ON CONFLICT ... DO UPDATE``, ``BOOLEAN``, ``DOUBLE PRECISION``, ``TEXT``).

SQLite runs on one worker thread with one connection in WAL mode (``synchronous=NORMAL``:
a committed transaction survives a process crash; the last ones may be lost on power
loss, which the MQTT at-least-once redelivery covers). PostgreSQL uses a psycopg pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

Row = tuple[Any, ...]
Params = Sequence[Any]


class DatabaseError(RuntimeError):
    """The database refused a statement or cannot be reached."""


class Transaction(Protocol):
    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; return the number of rows it changed."""
        ...

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]: ...


class Database(Protocol):
    """What the stores need: statements, queries and transactions."""

    url: str

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def execute(self, sql: str, params: Params = ()) -> int: ...
    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]: ...
    async def fetchone(self, sql: str, params: Params = ()) -> Row | None: ...
    def transaction(self) -> contextlib.AbstractAsyncContextManager[Transaction]: ...

    async def execute_batch(self, statements: Sequence[tuple[str, Params]]) -> list[int]:
        """Run statements in one transaction with one round trip; rows changed by each."""
        ...


def connect(url: str) -> Database:
    """``sqlite:///path/to/file.db`` or ``postgresql://user@host/db``."""
    if url.startswith("sqlite:///"):
        return SQLiteDatabase(url)
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresDatabase(url)
    raise DatabaseError(f"unsupported database URL {url!r}")


# --- SQLite ----------------------------------------------------------------------------
class _SQLiteTransaction:
    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db

    async def execute(self, sql: str, params: Params = ()) -> int:
        return int(await self._db._run(self._db._execute_sync, sql, params))

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        return list(await self._db._run(self._db._fetchall_sync, sql, params))


class SQLiteDatabase:
    def __init__(self, url: str) -> None:
        self.url = url
        self.path = Path(url.removeprefix("sqlite:///"))
        self._conn: sqlite3.Connection | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        # One connection, one thread; the lock keeps a transaction's statements together.
        self._lock = asyncio.Lock()
        self._thread_lock = threading.Lock()

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)

        def _open() -> sqlite3.Connection:
            # Components of one platform open the file at once at start-up; switching a new
            # file to WAL takes a write lock, so the first statements wait longer than the
            # busy timeout of ordinary statements before saying "database is locked".
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
            # The switch to WAL answers "database is locked" at once, without the busy
            # handler, while another connection is switching the same new file: six
            # connections opening one new file together failed 36 times in 300. Try again
            # for as long as the busy timeout would have waited.
            deadline = time.monotonic() + 30.0
            while True:
                try:
                    conn.execute("PRAGMA journal_mode=WAL")
                    break
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or time.monotonic() > deadline:
                        conn.close()
                        raise
                    time.sleep(0.02)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.execute("PRAGMA foreign_keys=ON")
            return conn

        try:
            self._conn = await asyncio.get_running_loop().run_in_executor(self._executor, _open)
        except sqlite3.Error as exc:
            raise DatabaseError(f"cannot open SQLite database {self.path}: {exc}") from exc

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=True)

    async def _run(self, fn: Any, *args: Any) -> Any:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except sqlite3.Error as exc:
            raise DatabaseError(str(exc)) from exc

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise DatabaseError("database is not open")
        return self._conn

    def _execute_sync(self, sql: str, params: Params) -> int:
        return int(self._connection().execute(sql, tuple(params)).rowcount)

    def _fetchall_sync(self, sql: str, params: Params) -> list[Row]:
        return list(self._connection().execute(sql, tuple(params)).fetchall())

    async def execute(self, sql: str, params: Params = ()) -> int:
        async with self._lock:
            return int(await self._run(self._execute_sync, sql, params))

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        async with self._lock:
            return list(await self._run(self._fetchall_sync, sql, params))

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    def _batch_sync(self, statements: Sequence[tuple[str, Params]]) -> list[int]:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            counts = [int(conn.execute(sql, tuple(p)).rowcount) for sql, p in statements]
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return counts

    async def execute_batch(self, statements: Sequence[tuple[str, Params]]) -> list[int]:
        # One hop to the worker thread for the whole batch, not one per statement.
        async with self._lock:
            return list(await self._run(self._batch_sync, statements))

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        async with self._lock:
            await self._run(self._execute_sync, "BEGIN IMMEDIATE", ())
            try:
                yield _SQLiteTransaction(self)
            except BaseException:
                await self._run(self._execute_sync, "ROLLBACK", ())
                raise
            await self._run(self._execute_sync, "COMMIT", ())


# --- PostgreSQL --------------------------------------------------------------------------
def _pg(sql: str) -> str:
    return sql.replace("?", "%s")


class _PostgresTransaction:
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Params = ()) -> int:
        cur = await self._conn.execute(_pg(sql), tuple(params))
        return int(cur.rowcount)

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        cur = await self._conn.execute(_pg(sql), tuple(params))
        return list(await cur.fetchall())


def _lost_creation_race(sql: str, exc: Exception) -> bool:
    """``CREATE ... IF NOT EXISTS`` that failed because another process created the same
    object at the same moment: PostgreSQL checks existence before it inserts into its
    catalogs, so two replicas starting together on a fresh database (twin workers, API
    replicas) can both pass the check and one gets a unique violation. The object exists,
    which is all the statement asked for."""
    from psycopg import errors

    statement = sql.lstrip().upper()
    return (
        statement.startswith("CREATE")
        and "IF NOT EXISTS" in statement
        and isinstance(exc, errors.UniqueViolation | errors.DuplicateTable | errors.DuplicateObject)
    )


class PostgresDatabase:
    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 8) -> None:
        self.url = url
        self._min_size = min_size
        self._max_size = max_size
        self._pool: Any = None

    async def open(self) -> None:
        import psycopg
        from psycopg_pool import AsyncConnectionPool

        pool = AsyncConnectionPool(
            self.url,
            min_size=self._min_size,
            max_size=self._max_size,
            open=False,
            kwargs={"autocommit": True},
        )
        try:
            await pool.open(wait=True, timeout=10)
        except (psycopg.Error, Exception) as exc:
            await pool.close()
            raise DatabaseError(f"cannot connect to PostgreSQL: {exc}") from exc
        self._pool = pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    def _require_pool(self) -> Any:
        if self._pool is None:
            raise DatabaseError("database is not open")
        return self._pool

    async def execute(self, sql: str, params: Params = ()) -> int:
        import psycopg

        try:
            async with self._require_pool().connection() as conn:
                cur = await conn.execute(_pg(sql), tuple(params))
                return int(cur.rowcount)
        except psycopg.Error as exc:
            if _lost_creation_race(sql, exc):
                return 0
            raise DatabaseError(str(exc)) from exc

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        import psycopg

        try:
            async with self._require_pool().connection() as conn:
                cur = await conn.execute(_pg(sql), tuple(params))
                return list(await cur.fetchall())
        except psycopg.Error as exc:
            raise DatabaseError(str(exc)) from exc

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def execute_batch(self, statements: Sequence[tuple[str, Params]]) -> list[int]:
        import psycopg

        # Pipeline mode sends every statement before reading any result: one round trip.
        try:
            async with self._require_pool().connection() as conn, conn.transaction():
                async with conn.pipeline() as pipeline:
                    cursors = [await conn.execute(_pg(sql), tuple(p)) for sql, p in statements]
                    await pipeline.sync()
                return [int(cur.rowcount) for cur in cursors]
        except psycopg.Error as exc:
            raise DatabaseError(str(exc)) from exc

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        import psycopg

        try:
            async with self._require_pool().connection() as conn, conn.transaction():
                yield _PostgresTransaction(conn)
        except psycopg.Error as exc:
            raise DatabaseError(str(exc)) from exc
