"""The work-order table opened by two components at once (rules and API in `chargetwin up`)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from chargetwin.database import SQLiteDatabase
from fleet.work_orders import EXTRA_COLUMNS, WorkOrderStore


async def test_two_connections_creating_the_schema_at_once_both_succeed(tmp_path: Path) -> None:
    # The collision needs both to read the columns before either adds one, which the thread
    # scheduling decides: a few fresh databases make a pass without the fix unlikely.
    for attempt in range(5):
        url = f"sqlite:///{tmp_path / f'chargetwin-{attempt}.db'}"
        first, second = SQLiteDatabase(url), SQLiteDatabase(url)
        await first.open()
        await second.open()
        try:
            await asyncio.gather(
                WorkOrderStore(first).create_schema(), WorkOrderStore(second).create_schema()
            )
            rows = await first.fetchall("PRAGMA table_info(work_orders)")
            assert {name for name, _ in EXTRA_COLUMNS} <= {str(row[1]) for row in rows}
        finally:
            await first.close()
            await second.close()
