"""Components of one platform open a new SQLite file at once; every open succeeds."""

from __future__ import annotations

import asyncio
from pathlib import Path

from chargetwin.database import SQLiteDatabase


async def test_connections_opening_one_new_file_together_all_open(tmp_path: Path) -> None:
    # Before the switch to WAL was tried again, about one round in eight failed with
    # "database is locked" (six connections on a new file, 300 rounds: 36 failures).
    for round_ in range(60):
        url = f"sqlite:///{tmp_path / f'round-{round_}.db'}"
        databases = [SQLiteDatabase(url) for _ in range(6)]
        try:
            await asyncio.gather(*(db.open() for db in databases))
            rows = await asyncio.gather(*(db.fetchall("PRAGMA journal_mode") for db in databases))
            assert all(r == [("wal",)] for r in rows)
        finally:
            for db in databases:
                await db.close()
