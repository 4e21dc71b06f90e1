"""Leadership on both locks: one leader at a time, a standby takes over when the leader
stops, and a leader whose PostgreSQL session ends stops its job at its next check."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from chargetwin.leadership import Leadership, PostgresLock, lock_for

POSTGRES_URL = os.environ.get(
    "CHARGETWIN_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


class Job:
    """Counts the terms it ran and whether it is running now."""

    def __init__(self) -> None:
        self.running = 0
        self.starts = 0

    async def __call__(self, stop: asyncio.Event) -> None:
        self.running += 1
        self.starts += 1
        try:
            await stop.wait()
        finally:
            self.running -= 1


async def _until(check: object, timeout: float = 10.0) -> float:
    started = time.monotonic()
    while not check():  # type: ignore[operator]
        assert time.monotonic() - started < timeout, "not in time"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


def _lock_url(tmp_path: Path, kind: str) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path}/chargetwin.db"
    if not POSTGRES_URL:
        pytest.skip("CHARGETWIN_TEST_POSTGRES_URL is empty: PostgreSQL tests disabled")
    return POSTGRES_URL


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_one_leader_and_a_standby_that_takes_over(tmp_path: Path, kind: str) -> None:
    url = _lock_url(tmp_path, kind)
    name = f"test-{uuid.uuid4().hex[:8]}"  # a lock no other test run holds
    jobs = [Job(), Job()]
    leaders = [Leadership(lock_for(url, name), f"l{i}", poll=0.1) for i in range(2)]
    stops = [asyncio.Event(), asyncio.Event()]
    first = asyncio.create_task(leaders[0].run(jobs[0], stops[0]))
    await _until(lambda: jobs[0].running == 1)
    second = asyncio.create_task(leaders[1].run(jobs[1], stops[1]))
    try:
        await asyncio.sleep(0.5)  # five polls of the standby
        assert (jobs[0].running, jobs[1].starts) == (1, 0)
        stops[0].set()
        await asyncio.wait_for(first, 10)
        took = await _until(lambda: jobs[1].running == 1)
        assert took < 5  # polls every 0.1 s; slack for a loaded machine
        assert (jobs[0].running, leaders[1].terms) == (0, 1)
    finally:
        for stop in stops:
            stop.set()
        await asyncio.wait_for(asyncio.gather(first, second), 10)
    assert jobs[1].running == 0


@pytest.mark.postgres
async def test_a_leader_whose_session_ends_stops_its_job_and_one_leads_again() -> None:
    if not POSTGRES_URL:
        pytest.skip("CHARGETWIN_TEST_POSTGRES_URL is empty: PostgreSQL tests disabled")
    name = f"test-{uuid.uuid4().hex[:8]}"
    jobs = [Job(), Job()]
    locks = [PostgresLock(POSTGRES_URL, name) for _ in range(2)]
    leaders = [Leadership(lock, f"l{i}", poll=0.1) for i, lock in enumerate(locks)]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(leaders[0].run(jobs[0], stop))]
    await _until(lambda: jobs[0].running == 1)
    tasks.append(asyncio.create_task(leaders[1].run(jobs[1], stop)))
    try:
        await asyncio.sleep(0.3)
        # The server ends the leader's session (as when its host vanished and TCP gave up).
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            # The holder's own session (its key's sign would make a pg_locks match fragile).
            pid = locks[0]._conn.info.backend_pid
            [(ended,)] = admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchall()
        assert ended
        # The old leader notices at its next check (within a poll) and stops its job; then
        # one of the two leads again, in a new session: a second term in all.
        await _until(
            lambda: (
                leaders[0].terms + leaders[1].terms == 2 and jobs[0].running + jobs[1].running == 1
            )
        )
        assert jobs[0].starts + jobs[1].starts == 2
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
