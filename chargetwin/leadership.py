"""Leadership: exactly one process at a time does a named job (the fleet engines, the
rules engine) while any number of standbys wait to take over.

Why a lock in the database rather than an election over MQTT: every process that may
lead already shares the database, and the database is what the job writes; a lock there
is held exactly as long as the holder's session lives. With PostgreSQL it is a
session-level advisory lock (``pg_try_advisory_lock``) on a connection of its own: when
the holder dies (kill -9, lost host) the server ends its session and the lock is free at
once; a standby polls every ``poll`` seconds and takes over. TCP keepalives on both ends
of the lock's connection bound how long a silently vanished holder (power cut, partition)
keeps it: the server drops the session after about ``SERVER_GIVES_UP_S`` seconds without
an answer. The key is the lock's name within the connection's schema
(``current_schema()``), so deployments (or test runs) in different schemas of one
database each have their own leader. With SQLite the platform is one machine, so the lock
is an ``flock`` on a file beside the database, released by the kernel when the holder dies.

The holder checks its lock every ``poll`` seconds, a check that gives up after
``CHECK_TIMEOUT_S``; when the check fails (its connection to PostgreSQL broke or hangs), it
stops the job at once, because a standby may hold the lock soon. A partitioned holder
notices (``poll`` + ``CHECK_TIMEOUT_S``) before the server frees its lock
(``SERVER_GIVES_UP_S``), but the job may still be finishing a step then: leadership makes
two leaders rare and short, never impossible, so every step a job takes is a
compare-and-set on what it read (see :mod:`fleet.rollouts`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import zlib
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

Job = Callable[[asyncio.Event], Coroutine[Any, Any, None]]

CHECK_TIMEOUT_S = 5.0
# Server side of the lock's connection: first probe after 5 s of silence, then every 2 s,
# given up after 3 unanswered (and unacknowledged data is given up after the same time).
_SERVER_KEEPALIVES = {
    "tcp_keepalives_idle": 5,
    "tcp_keepalives_interval": 2,
    "tcp_keepalives_count": 3,
    "tcp_user_timeout": 11_000,  # milliseconds
}
SERVER_GIVES_UP_S = 11.0


class Lock(Protocol):
    async def try_acquire(self) -> bool: ...
    async def still_held(self) -> bool: ...
    async def release(self) -> None: ...


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for ``pg_advisory_lock``, from the lock's name."""
    return int.from_bytes(
        zlib.crc32(name.encode()).to_bytes(4, "big") + b"CTwn", "big", signed=True
    )


class PostgresLock:
    """A session-level advisory lock on a connection of its own."""

    def __init__(self, url: str, name: str) -> None:
        self.url = url
        self.name = name
        self.key: int | None = None  # known once connected: it depends on the schema
        self._conn: Any = None

    async def _connect(self) -> Any:
        import psycopg

        conn = await psycopg.AsyncConnection.connect(
            self.url,
            autocommit=True,
            connect_timeout=5,
            keepalives=1,
            keepalives_idle=5,
            keepalives_interval=2,
            keepalives_count=3,
        )
        try:
            for setting, value in _SERVER_KEEPALIVES.items():
                try:
                    await conn.execute(f"SET {setting} = {int(value)}")
                except psycopg.Error as exc:  # e.g. no TCP_USER_TIMEOUT on the server's OS
                    log.info("leadership: %s not set on the server: %s", setting, exc)
            cur = await conn.execute("SELECT current_schema()")
            row = await cur.fetchone()
        except BaseException:
            await conn.close()
            raise
        schema = str(row[0]) if row and row[0] else ""
        self.key = lock_key(f"{schema}:{self.name}")
        return conn

    async def try_acquire(self) -> bool:
        import psycopg

        try:
            if self._conn is None or self._conn.closed:
                async with asyncio.timeout(CHECK_TIMEOUT_S * 2):
                    self._conn = await self._connect()
            async with asyncio.timeout(CHECK_TIMEOUT_S):
                cur = await self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,))
            row = await cur.fetchone()
            return bool(row and row[0])
        except (psycopg.Error, OSError, TimeoutError) as exc:
            log.warning("leadership: PostgreSQL unreachable (%s); trying again", exc)
            await self.release()
            return False

    async def still_held(self) -> bool:
        import psycopg

        if self._conn is None or self._conn.closed:
            return False
        try:
            # A session-level lock lives as long as its session: a live session holds it.
            async with asyncio.timeout(CHECK_TIMEOUT_S):
                await self._conn.execute("SELECT 1")
            return True
        except (psycopg.Error, OSError, TimeoutError) as exc:
            log.warning("leadership: lost the connection that holds the lock: %s", exc)
            return False

    async def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            # Closing the session frees its advisory locks.
            with contextlib.suppress(Exception):
                await conn.close()


class FileLock:
    """An exclusive ``flock`` on a file (one machine: the SQLite deployment)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    async def try_acquire(self) -> bool:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    async def still_held(self) -> bool:
        return self._fd is not None

    async def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor drops the flock


def lock_for(database_url: str, name: str) -> Lock:
    """The lock for ``name`` among the processes that share ``database_url``."""
    if database_url.startswith(("postgresql://", "postgres://")):
        return PostgresLock(database_url, name)
    path = Path(database_url.removeprefix("sqlite:///"))
    return FileLock(path.with_name(f"{path.name}.{name}.lock"))


class Leadership:
    """Run ``job`` only while this process holds the lock; wait as a standby otherwise."""

    def __init__(self, lock: Lock, name: str, *, poll: float = 1.0) -> None:
        self.lock = lock
        self.name = name
        self.poll = poll
        self.leading = asyncio.Event()
        self.terms = 0  # how many times this process became the leader

    async def run(self, job: Job, stop: asyncio.Event) -> None:
        """Until ``stop``: acquire, run ``job`` while held, stop it when the lock is lost."""
        waiting_logged = False
        try:
            while not stop.is_set():
                if not await self.lock.try_acquire():
                    if not waiting_logged:
                        log.info("%s: standby; another process leads", self.name)
                        waiting_logged = True
                    await _sleep_or_stop(stop, self.poll)
                    continue
                waiting_logged = False
                self.terms += 1
                log.info("%s: this process leads now", self.name)
                await self._lead(job, stop)
        finally:
            await self.lock.release()

    async def _lead(self, job: Job, stop: asyncio.Event) -> None:
        job_stop = asyncio.Event()
        task = asyncio.create_task(job(job_stop), name=f"{self.name}-leader")
        self.leading.set()
        try:
            while not stop.is_set() and not task.done():
                await _sleep_or_stop(stop, self.poll, task)
                if not stop.is_set() and not task.done() and not await self.lock.still_held():
                    log.error("%s: leadership lost; stopping the job", self.name)
                    break
        finally:
            self.leading.clear()
            job_stop.set()
            await asyncio.wait({task}, timeout=30)
            if not task.done():
                task.cancel()
                await asyncio.wait({task})
            await self.lock.release()
        error = None if task.cancelled() else task.exception()
        if error is not None:
            raise error


async def _sleep_or_stop(
    stop: asyncio.Event, seconds: float, task: asyncio.Task[None] | None = None
) -> None:
    waiter = asyncio.ensure_future(stop.wait())
    waiting: set[asyncio.Future[Any]] = {waiter}
    if task is not None:
        waiting.add(task)
    try:
        await asyncio.wait(waiting, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiter
