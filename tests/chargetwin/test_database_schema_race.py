"""Replicas starting together on a fresh PostgreSQL database create their tables at once."""

from __future__ import annotations

import asyncio
import os
import uuid
from urllib.parse import quote

import psycopg
import pytest

from chargetwin.database import PostgresDatabase

POSTGRES_URL = os.environ.get(
    "CHARGETWIN_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)

pytestmark = pytest.mark.postgres


async def test_concurrent_create_if_not_exists_never_fails() -> None:
    if not POSTGRES_URL:
        pytest.skip("CHARGETWIN_TEST_POSTGRES_URL is empty: PostgreSQL tests disabled")
    for _ in range(5):  # the race is narrow: a few fresh schemas make it show
        schema = f"t_race_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        sep = "&" if "?" in POSTGRES_URL else "?"
        url = f"{POSTGRES_URL}{sep}options={quote(f'-csearch_path={schema}')}"
        replicas = [PostgresDatabase(url, max_size=2) for _ in range(6)]
        try:
            await asyncio.gather(*(db.open() for db in replicas))
            await asyncio.gather(
                *(
                    db.execute(
                        "CREATE TABLE IF NOT EXISTS shadows_race (id TEXT PRIMARY KEY, v INT)"
                    )
                    for db in replicas
                )
            )
            await asyncio.gather(
                *(
                    db.execute("CREATE INDEX IF NOT EXISTS shadows_race_v ON shadows_race (v)")
                    for db in replicas
                )
            )
            assert await replicas[0].fetchall("SELECT count(*) FROM shadows_race") == [(0,)]
        finally:
            await asyncio.gather(*(db.close() for db in replicas))
            with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {schema} CASCADE")
