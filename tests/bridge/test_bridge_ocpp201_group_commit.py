"""Group commit of 2.0.1 TransactionEvent writes, against a real SQLite database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.v201.group_commit import GroupCommit
from chargetwin.database import Database, DatabaseError, connect

INSERT = "INSERT INTO events (station, seq_no) VALUES (?, ?)"


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = connect(f"sqlite:///{tmp_path}/group.db")
    await database.open()
    await database.execute(
        "CREATE TABLE events (station TEXT NOT NULL, seq_no INTEGER NOT NULL CHECK (seq_no >= 0),"
        " PRIMARY KEY (station, seq_no))"
    )
    try:
        yield database
    finally:
        await database.close()


async def rows(db: Database) -> list[tuple[str, int]]:
    return [
        (str(r[0]), int(r[1]))
        for r in await db.fetchall("SELECT station, seq_no FROM events ORDER BY station, seq_no")
    ]


async def test_concurrent_writes_are_committed_together(db: Database) -> None:
    commits = GroupCommit(db)
    await asyncio.gather(
        *(
            commits.write([(INSERT, (f"S{i:03d}", 1)), (INSERT, (f"S{i:03d}", 2))])
            for i in range(200)
        )
    )
    assert await rows(db) == [(f"S{i:03d}", n) for i in range(200) for n in (1, 2)]
    # The first caller's batch goes alone; everyone who came while it committed, together.
    assert 1 <= commits.batches <= 3


async def test_a_lone_write_is_committed_at_once(db: Database) -> None:
    commits = GroupCommit(db)
    await asyncio.wait_for(commits.write([(INSERT, ("A", 1))]), 5)
    assert await rows(db) == [("A", 1)]
    await commits.write([(INSERT, ("A", 2))])  # the committer ends and starts again
    assert await rows(db) == [("A", 1), ("A", 2)]


async def test_one_failing_write_fails_alone(db: Database) -> None:
    commits = GroupCommit(db)
    results = await asyncio.gather(
        commits.write([(INSERT, ("A", 1))]),
        commits.write([(INSERT, ("B", 1))]),
        commits.write([(INSERT, ("C", 1)), (INSERT, ("C", -1))]),  # CHECK fails
        commits.write([(INSERT, ("D", 1))]),
        return_exceptions=True,
    )
    assert [type(r) for r in results] == [type(None), type(None), DatabaseError, type(None)]
    # C's first statement went back with its second: each event's writes are atomic.
    assert await rows(db) == [("A", 1), ("B", 1), ("D", 1)]
    await commits.write([(INSERT, ("E", 1))])  # and it keeps working
    assert ("E", 1) in await rows(db)
