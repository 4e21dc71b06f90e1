"""The charger registry's password checks, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
from typing import Any

import pytest

from chargetwin.database import Database, DatabaseError
from twin.registry import ChargerRegistry, check_password, hash_password


def cheap_hash(password: str) -> str:
    """The registry's own format at scrypt N=2^8, so hundreds of chargers check quickly."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**8, r=8, p=1, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${2**8}$8$1${b64(salt).decode()}${b64(digest).decode()}"


class CountingDatabase:
    """The real database, counting queries; ``fail`` makes them raise as an outage would."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.queries = 0
        self.fail = False

    async def fetchall(self, sql: str, params: Any = ()) -> list[Any]:
        self.queries += 1
        if self.fail:
            raise DatabaseError("database down for the test")
        return await self.db.fetchall(sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


@pytest.fixture(autouse=True)
async def registry_schema(db: Database) -> None:
    await ChargerRegistry(db).create_schema()


async def add(db: Database, charger_id: str, password: str | None) -> None:
    await db.execute(
        "INSERT INTO chargers (charger_id, password_hash, tags, created_at) VALUES (?, ?, '[]', 0)",
        (charger_id, cheap_hash(password) if password else None),
    )


async def test_verify_answers_per_charger_and_password(db: Database) -> None:
    registry = ChargerRegistry(db)
    await add(db, "CP-1", "secret-1")
    await add(db, "CP-NOPW", None)
    assert await registry.verify("CP-1", "secret-1")
    assert await registry.verify("CP-1", "secret-1")  # from the cache this time
    assert not await registry.verify("CP-1", "secret-2")
    assert not await registry.verify("CP-NOPW", "")
    assert not await registry.verify("CP-UNKNOWN", "secret-1")


async def test_a_storm_of_checks_reads_the_hashes_in_a_few_queries(db: Database) -> None:
    for i in range(300):
        await add(db, f"CP-{i:03d}", f"pw-{i}")
    counting = CountingDatabase(db)
    registry = ChargerRegistry(counting)  # type: ignore[arg-type]
    checks = [registry.verify(f"CP-{i:03d}", f"pw-{i}") for i in range(300)]
    checks += [registry.verify(f"CP-{i:03d}", "wrong") for i in range(0, 300, 7)]
    checks += [registry.verify("CP-NONE", "pw")]
    results = await asyncio.gather(*checks)
    assert results[:300] == [True] * 300
    assert not any(results[300:])
    assert counting.queries <= 4  # 343 reads: at most 500 per query, plus the first alone


async def test_an_outage_answers_every_waiting_check_with_the_error(db: Database) -> None:
    await add(db, "CP-1", "secret-1")
    counting = CountingDatabase(db)
    registry = ChargerRegistry(counting)  # type: ignore[arg-type]
    counting.fail = True
    results = await asyncio.gather(
        *(registry.verify("CP-1", "secret-1") for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, DatabaseError) for r in results)
    counting.fail = False
    assert await registry.verify("CP-1", "secret-1")


async def test_new_passwords_take_the_configured_cost_and_old_hashes_keep_theirs(
    db: Database,
) -> None:
    cheap = ChargerRegistry(db, password_cost=10)
    await cheap.register("CP-CHEAP", "secret-cheap")
    row = await db.fetchone("SELECT password_hash FROM chargers WHERE charger_id = 'CP-CHEAP'")
    assert row is not None and str(row[0]).startswith("scrypt$1024$8$1$")
    await add(db, "CP-OLD", "secret-old")  # stored at N=2^8 by an earlier setting
    assert await cheap.verify("CP-CHEAP", "secret-cheap")
    assert await cheap.verify("CP-OLD", "secret-old")
    assert await ChargerRegistry(db).verify("CP-CHEAP", "secret-cheap")


def test_the_highest_cost_allowed_hashes_and_checks() -> None:
    stored = hash_password("secret", 16)  # 128 MiB of scrypt memory: over OpenSSL's default
    assert stored.startswith("scrypt$65536$")
    assert check_password("secret", stored)
    assert not check_password("other", stored)
