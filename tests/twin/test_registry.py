"""The charger registry's password checks, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from chargetwin.database import Database, DatabaseError
from twin.passwords import (
    KEY_FILE,
    PasswordKeyError,
    check_scrypt,
    load_or_create_key,
    password_key,
    scrypt_hash,
)
from twin.registry import (
    ChargerNotFoundError,
    ChargerRegistry,
    Rotation,
    RotationError,
    RotationInProgressError,
    RotationStatus,
    WeakPasswordError,
)


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


KEY = b"k" * 32


async def stored_hash(db: Database, charger_id: str) -> str:
    row = await db.fetchone(
        "SELECT password_hash FROM chargers WHERE charger_id = ?", (charger_id,)
    )
    assert row is not None
    return str(row[0])


async def test_new_passwords_get_keyed_hashes_that_only_the_same_key_checks(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    registry = ChargerRegistry(db, password_key=KEY)
    await registry.register("CP-NEW", "a-random-secret-0001")
    stored = await stored_hash(db, "CP-NEW")
    assert stored.startswith(f"hmac-sha256${registry.hasher.key_id}$")
    assert "a-random-secret-0001" not in stored
    assert await registry.verify("CP-NEW", "a-random-secret-0001")
    assert not await registry.verify("CP-NEW", "a-random-secret-0002")
    other_key = ChargerRegistry(db, password_key=b"o" * 32)
    assert not await other_key.verify("CP-NEW", "a-random-secret-0001")
    assert "needs the same --charger-password-key" in caplog.text


async def test_a_password_under_16_characters_is_not_registered(db: Database) -> None:
    registry = ChargerRegistry(db, password_key=KEY)
    with pytest.raises(WeakPasswordError, match="at least 16 characters"):
        await registry.register("CP-WEAK", "fifteen-chars-x")
    assert not await registry.exists("CP-WEAK")
    await registry.register("CP-OK", "sixteen-chars-xx")
    with pytest.raises(WeakPasswordError):
        await registry.set_password("CP-OK", "short")


async def test_old_scrypt_hashes_are_checked_and_replaced_by_keyed_ones(db: Database) -> None:
    registry = ChargerRegistry(db, password_key=KEY)
    await add(db, "CP-OLD", "an-old-long-secret")
    await add(db, "CP-SHORT", "secret-1")  # registered when 8 characters were allowed
    assert not await registry.verify("CP-OLD", "wrong-but-long-enough")
    assert (await stored_hash(db, "CP-OLD")).startswith("scrypt$")
    assert await registry.verify("CP-OLD", "an-old-long-secret")
    assert (await stored_hash(db, "CP-OLD")).startswith("hmac-sha256$")
    fresh = ChargerRegistry(db, password_key=KEY)  # a restarted process: nothing cached
    assert await fresh.verify("CP-OLD", "an-old-long-secret")
    assert not await fresh.verify("CP-OLD", "wrong-but-long-enough")
    # A short password keeps its slow hash: a fast one would make it guessable.
    assert await registry.verify("CP-SHORT", "secret-1")
    assert (await stored_hash(db, "CP-SHORT")).startswith("scrypt$")


async def test_a_replacement_never_overwrites_a_password_changed_meanwhile(db: Database) -> None:
    registry = ChargerRegistry(db, password_key=KEY)
    await add(db, "CP-RACE", "an-old-long-secret")
    old = await stored_hash(db, "CP-RACE")
    await registry.set_password("CP-RACE", "set-by-the-api-0001")
    await registry._upgrades.replace("CP-RACE", old, registry.hasher.hash("an-old-long-secret"))
    assert await registry.verify("CP-RACE", "set-by-the-api-0001")
    assert not await registry.verify("CP-RACE", "an-old-long-secret")


async def test_a_storm_of_old_hashes_is_replaced_in_a_few_writes(db: Database) -> None:
    for i in range(200):
        await add(db, f"CP-{i:03d}", f"an-old-long-secret-{i}")
    registry = ChargerRegistry(db, password_key=KEY)
    calls: list[int] = []
    original = db.execute_batch

    async def counting(statements: Any) -> list[int]:
        calls.append(len(statements))
        return await original(statements)

    db.execute_batch = counting  # type: ignore[method-assign]
    results = await asyncio.gather(
        *(registry.verify(f"CP-{i:03d}", f"an-old-long-secret-{i}") for i in range(200))
    )
    assert all(results)
    assert sum(calls) == 200 and len(calls) <= 100  # one each without the batching
    rows = await db.fetchall("SELECT password_hash FROM chargers")
    assert all(str(row[0]).startswith("hmac-sha256$") for row in rows)


def test_the_highest_scrypt_cost_still_checks() -> None:
    stored = scrypt_hash("secret", 16)  # 128 MiB of scrypt memory: over OpenSSL's default
    assert stored.startswith("scrypt$65536$")
    assert check_scrypt("secret", stored)
    assert not check_scrypt("other", stored)


# --- the key ----------------------------------------------------------------------------------
def test_the_key_is_created_once_owner_only_and_read_back(tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path / "data")
    path = tmp_path / "data" / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(key) >= 32
    assert load_or_create_key(tmp_path / "data") == key
    assert password_key(None, tmp_path / "data") == key
    assert password_key("x" * 40, tmp_path / "data") == b"x" * 40
    assert [p.name for p in (tmp_path / "data").iterdir()] == [KEY_FILE]


def test_processes_starting_together_share_the_first_key(tmp_path: Path) -> None:
    with ThreadPoolExecutor(8) as pool:
        keys = set(pool.map(lambda _: load_or_create_key(tmp_path), range(32)))
    assert len(keys) == 1


def test_a_short_or_unreadable_key_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PasswordKeyError, match="at least 32 characters"):
        password_key("too-short", tmp_path)
    (tmp_path / KEY_FILE).write_text("short\n")
    with pytest.raises(PasswordKeyError, match=KEY_FILE):
        load_or_create_key(tmp_path)


# --- password rotations -----------------------------------------------------------------------
async def rotating(db: Database) -> tuple[ChargerRegistry, list[Rotation], str]:
    """A keyed registry with CP-R registered (password OLD), a rotation started, and the
    list every rotation change is announced into."""
    heard: list[Rotation] = []

    async def hear(rotation: Rotation) -> None:
        heard.append(rotation)

    registry = ChargerRegistry(db, password_key=KEY, on_rotation=hear)
    await registry.register("CP-R", OLD)
    await registry.start_rotation("CP-R")
    found = await registry.rotation_secret("CP-R")
    assert found is not None
    return registry, heard, found[1]


OLD = "the-old-password-0001"


async def test_a_rotation_accepts_both_passwords_until_the_new_one_is_used(db: Database) -> None:
    registry, heard, new = await rotating(db)
    assert len(new) == 20 and new.isalnum()
    rotation = await registry.rotation("CP-R")
    assert rotation is not None and rotation.status is RotationStatus.PENDING
    assert await registry.verify("CP-R", OLD)
    answered = await registry.rotation_answered("CP-R", rotation.rotation_id, True)
    assert answered is not None and answered.status is RotationStatus.ACCEPTED
    assert await registry.verify("CP-R", OLD)  # the charger may come back with either
    assert (await registry.rotation_secret("CP-R")) is not None  # sent again if it does

    assert await registry.verify("CP-R", new)  # the first use of the new one ends it
    done = await registry.rotation("CP-R")
    assert done is not None and done.status is RotationStatus.DONE
    assert not await registry.verify("CP-R", OLD)
    assert await ChargerRegistry(db, password_key=KEY).verify("CP-R", new)
    assert await registry.rotation_secret("CP-R") is None
    row = await db.fetchone(
        "SELECT secret, new_hash FROM charger_credential_rotations WHERE charger_id = 'CP-R'"
    )
    assert row == (None, None)  # the password in clear is gone
    assert [r.status for r in heard] == [RotationStatus.ACCEPTED, RotationStatus.DONE]


async def test_a_new_password_used_before_its_answer_arrived_ends_the_rotation(
    db: Database,
) -> None:
    registry, heard, new = await rotating(db)
    assert await registry.verify("CP-R", new)
    assert not await registry.verify("CP-R", OLD)
    assert [r.status for r in heard] == [RotationStatus.DONE]
    rotation = await registry.rotation("CP-R")
    assert rotation is not None
    assert await registry.rotation_answered("CP-R", rotation.rotation_id, True) is None


async def test_a_refused_rotation_fails_and_keeps_the_old_password(db: Database) -> None:
    registry, heard, new = await rotating(db)
    rotation = await registry.rotation("CP-R")
    assert rotation is not None
    failed = await registry.rotation_answered("CP-R", rotation.rotation_id, False, "Rejected")
    assert failed is not None and failed.status is RotationStatus.FAILED
    assert failed.reason == "Rejected"
    assert await registry.verify("CP-R", OLD)
    assert not await registry.verify("CP-R", new)
    assert await registry.rotation_secret("CP-R") is None
    assert [(r.status, r.reason) for r in heard] == [(RotationStatus.FAILED, "Rejected")]
    again = await registry.start_rotation("CP-R")  # a failed one may be asked again
    assert again.rotation_id != rotation.rotation_id


async def test_one_open_rotation_per_charger_and_none_without_a_password(db: Database) -> None:
    registry, _, _ = await rotating(db)
    results = await asyncio.gather(
        *(registry.start_rotation("CP-R") for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, RotationInProgressError) for r in results)
    await registry.register("CP-CERT", None)
    with pytest.raises(RotationError, match="certificate"):
        await registry.start_rotation("CP-CERT")
    with pytest.raises(ChargerNotFoundError):
        await registry.start_rotation("CP-NONE")
    with pytest.raises(RotationError, match="no charger password key"):
        await ChargerRegistry(db).start_rotation("CP-R")


async def test_setting_the_password_or_removing_the_charger_ends_its_rotation(
    db: Database,
) -> None:
    registry, _, new = await rotating(db)
    await registry.set_password("CP-R", "set-by-an-admin-0001")
    assert not await registry.verify("CP-R", new)
    assert await registry.rotation("CP-R") is None
    await registry.start_rotation("CP-R")
    await registry.delete("CP-R")
    assert await registry.rotation("CP-R") is None
