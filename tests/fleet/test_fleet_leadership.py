"""Leadership (chargetwin/leadership.py): one holder at a time among real processes.

Both lock kinds run against what production uses: a PostgreSQL session advisory lock
(``database_url`` parametrized over PostgreSQL) and an ``flock`` beside the SQLite file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

from chargetwin.leadership import FileLock, Leadership, PostgresLock, lock_for

# As tests/conftest.py reads it (not imported: every test folder has its own conftest).
POSTGRES_URL = os.environ.get(
    "CHARGETWIN_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
PROBE = Path(__file__).with_name("fleet_leader_probe.py")


class Probe:
    """A competing process; ``lines`` is what it printed so far."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.reader = asyncio.create_task(self._read(), name=f"probe-{proc.pid}")

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            self.lines.append(line.decode().strip())

    @property
    def leading(self) -> bool:
        return f"leading {self.proc.pid}" in self.lines

    async def close(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        await self.proc.wait()
        await self.reader


@contextlib.asynccontextmanager
async def probes(url: str, name: str, count: int) -> AsyncIterator[list[Probe]]:
    started: list[Probe] = []
    try:
        for _ in range(count):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(PROBE), url, name, stdout=asyncio.subprocess.PIPE
            )
            started.append(Probe(proc))
        yield started
    finally:
        for probe in started:
            await probe.close()


async def until(check: object, timeout: float, what: str) -> float:
    """Wait until ``check()`` is true; the seconds it took."""
    begin = time.monotonic()
    while not check():  # type: ignore[operator]
        if time.monotonic() - begin > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - begin


async def test_one_process_leads_and_a_standby_takes_over_after_kill_9(database_url: str) -> None:
    name = f"probe-{uuid.uuid4().hex[:8]}"
    async with probes(database_url, name, 3) as procs:
        await until(lambda: any(p.leading for p in procs), 30, "a leader")
        await asyncio.sleep(1.5)  # many polls of the standbys (every 0.2 s)
        leaders = [p for p in procs if p.leading]
        assert len(leaders) == 1, [p.lines for p in procs]
        leader = leaders[0]
        leader.proc.send_signal(signal.SIGKILL)
        await leader.proc.wait()
        rest = [p for p in procs if p is not leader]
        took = await until(lambda: any(p.leading for p in rest), 10, "a new leader")
        assert took < 5, took
        await asyncio.sleep(1.0)
        assert sum(p.leading for p in rest) == 1, [p.lines for p in rest]


async def test_stop_ends_the_job_and_releases_the_lock(database_url: str) -> None:
    name = f"stop-{uuid.uuid4().hex[:8]}"
    first = Leadership(lock_for(database_url, name), "first", poll=0.1)
    second = Leadership(lock_for(database_url, name), "second", poll=0.1)
    ended = asyncio.Event()

    async def job(job_stop: asyncio.Event) -> None:
        await job_stop.wait()
        ended.set()

    stop_first, stop_second = asyncio.Event(), asyncio.Event()
    a = asyncio.create_task(first.run(job, stop_first))
    await asyncio.wait_for(first.leading.wait(), 10)
    b = asyncio.create_task(second.run(job, stop_second))
    await asyncio.sleep(0.5)
    assert not second.leading.is_set()
    stop_first.set()
    await asyncio.wait_for(a, 10)
    assert ended.is_set() and not first.leading.is_set()
    await asyncio.wait_for(second.leading.wait(), 2)
    stop_second.set()
    await asyncio.wait_for(b, 10)
    assert (first.terms, second.terms) == (1, 1)


async def test_a_failing_job_ends_the_leadership_with_its_error_and_frees_the_lock(
    database_url: str,
) -> None:
    name = f"fail-{uuid.uuid4().hex[:8]}"

    async def job(job_stop: asyncio.Event) -> None:
        raise RuntimeError("engine broke")

    with pytest.raises(RuntimeError, match="engine broke"):
        await asyncio.wait_for(
            Leadership(lock_for(database_url, name), "x", poll=0.1).run(job, asyncio.Event()), 10
        )
    lock = lock_for(database_url, name)
    try:
        assert await lock.try_acquire()
    finally:
        await lock.release()


@pytest.mark.postgres
async def test_the_holder_that_loses_its_connection_stops_its_job() -> None:
    if not POSTGRES_URL:
        pytest.skip("PostgreSQL tests disabled")
    name = f"lost-{uuid.uuid4().hex[:8]}"
    lock = PostgresLock(POSTGRES_URL, name)
    leadership = Leadership(lock, "lost", poll=0.1)
    job_ends: list[float] = []

    async def job(job_stop: asyncio.Event) -> None:
        await job_stop.wait()
        job_ends.append(time.monotonic())

    stop = asyncio.Event()
    task = asyncio.create_task(leadership.run(job, stop))
    try:
        await asyncio.wait_for(leadership.leading.wait(), 10)
        pid = lock._conn.info.backend_pid
        # Another session takes the lock the moment the server ends the holder's session.
        rival = PostgresLock(POSTGRES_URL, name)
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        killed = time.monotonic()
        assert await rival.try_acquire()
        await until(lambda: job_ends, 3, "the job to stop")
        assert job_ends[0] - killed < 1.0
        assert not leadership.leading.is_set()
        # The lost holder keeps trying, as a standby now.
        await asyncio.sleep(0.5)
        assert not leadership.leading.is_set() and leadership.terms == 1
        await rival.release()
        await asyncio.wait_for(leadership.leading.wait(), 5)
        assert leadership.terms == 2
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


@pytest.mark.postgres
async def test_the_lock_is_per_schema_of_one_database() -> None:
    if not POSTGRES_URL:
        pytest.skip("PostgreSQL tests disabled")
    name = f"schema-{uuid.uuid4().hex[:8]}"
    schemas = [f"t_{uuid.uuid4().hex[:12]}" for _ in range(2)]
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        for schema in schemas:
            conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in POSTGRES_URL else "?"
    urls = [f"{POSTGRES_URL}{sep}options={quote(f'-csearch_path={s}')}" for s in schemas]
    locks = [PostgresLock(urls[0], name), PostgresLock(urls[1], name), PostgresLock(urls[0], name)]
    try:
        assert await locks[0].try_acquire()
        assert await locks[1].try_acquire()  # another schema: another deployment
        assert not await locks[2].try_acquire()  # the same schema: taken
        assert locks[0].key == locks[2].key != locks[1].key
    finally:
        for lock in locks:
            await lock.release()
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            for schema in schemas:
                conn.execute(f"DROP SCHEMA {schema} CASCADE")


async def test_file_lock_is_exclusive_and_freed_by_release(tmp_path: Path) -> None:
    path = tmp_path / "chargetwin.db.fleet.lock"
    one, two = FileLock(path), FileLock(path)
    assert await one.try_acquire()
    assert not await two.try_acquire()
    assert await one.still_held()
    await one.release()
    assert not await one.still_held()
    assert await two.try_acquire()
    await two.release()
    beside = lock_for(f"sqlite:///{tmp_path}/chargetwin.db", "fleet")
    assert isinstance(beside, FileLock) and beside.path == path


@pytest.mark.postgres
async def test_the_server_gives_up_a_silent_holder_s_session_within_seconds() -> None:
    """Server-side keepalives on the lock's session: a holder that vanished without a
    word (power cut, partition) frees the lock in about 11 s, not the OS default hours."""
    if not POSTGRES_URL:
        pytest.skip("PostgreSQL tests disabled")
    lock = PostgresLock(POSTGRES_URL, f"keepalive-{uuid.uuid4().hex[:8]}")
    try:
        assert await lock.try_acquire()
        settings = {}
        for name in ("tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count",
                     "tcp_user_timeout"):  # fmt: skip
            cur = await lock._conn.execute(f"SHOW {name}")
            settings[name] = (await cur.fetchone())[0]
        assert settings == {
            "tcp_keepalives_idle": "5",
            "tcp_keepalives_interval": "2",
            "tcp_keepalives_count": "3",
            "tcp_user_timeout": "11000",
        }
    finally:
        await lock.release()
