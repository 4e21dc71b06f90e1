"""Reads that arrive together share one query; a failed query fails only its own batch."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from bridge.stores import BootHistory
from chargetwin.batched_reads import BatchedReads
from chargetwin.database import connect


async def test_reads_that_arrive_together_share_queries_of_at_most_max_batch() -> None:
    queries: list[list[int]] = []

    async def fetch(keys: Sequence[int]) -> dict[int, str]:
        queries.append(list(keys))
        await asyncio.sleep(0.01)  # a database round trip
        return {key: f"v{key}" for key in keys if key % 2 == 0}

    reads: BatchedReads[int, str] = BatchedReads(fetch, "test", max_batch=100)
    answers = await asyncio.gather(*(reads.read(n) for n in range(250)), reads.read(4))
    assert answers[:6] == ["v0", None, "v2", None, "v4", None] and answers[-1] == "v4"
    # The query starts when the loop next turns: all 250 keys (4 asked twice) are waiting.
    assert [len(q) for q in queries] == [100, 100, 50]
    late = await asyncio.gather(reads.read(1001), reads.read(1002))
    assert list(late) == [None, "v1002"] and len(queries[-1]) == 2


async def test_a_failed_query_answers_its_batch_with_the_error_and_the_next_batch_runs() -> None:
    calls = 0

    async def fetch(keys: Sequence[str]) -> dict[str, int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("database gone")
        return dict.fromkeys(keys, 1)

    reads: BatchedReads[str, int] = BatchedReads(fetch, "test")
    with pytest.raises(OSError, match="database gone"):
        await reads.read("a")
    assert await reads.read("b") == 1


async def test_boot_history_of_a_storm_reads_the_shadow_table_in_few_queries(
    tmp_path: Path,
) -> None:
    db = connect(f"sqlite:///{tmp_path / 'history.db'}")
    await db.open()
    try:
        await db.execute("CREATE TABLE shadows (charger_id TEXT PRIMARY KEY, vendor TEXT)")
        for n in range(0, 600, 3):  # every third charger booted once (vendor set)
            await db.execute("INSERT INTO shadows VALUES (?, ?)", (f"CP{n}", "ACME"))
        await db.execute("INSERT INTO shadows VALUES ('CP1', NULL)")  # never booted
        history = BootHistory(db)
        answers = await asyncio.gather(*(history.booted_before(f"CP{n}") for n in range(600)))
        assert answers == [n % 3 == 0 for n in range(600)]
    finally:
        await db.close()
