"""The charger registry: which charger ids exist and the password each one connects with.

The API registers chargers; the bridge checks passwords at the websocket upgrade; the
twin refuses shadow updates for ids that are not registered. Passwords are kept as
salted scrypt hashes (RFC 7914) in a self-describing string, so the cost can be raised
later without breaking stored hashes.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from chargetwin.database import Database
from chargetwin.topics import validate_charger_id

# scrypt cost of new hashes, as log2 N (r=8, p=1): 14 takes 16 MiB and ~40 ms on a small
# machine, 10 takes 1 MiB and ~2 ms (--charger-password-cost). Checks run off the event
# loop, and a process checks each charger's password once (cached per stored hash), so a
# restarted bridge pays the cost once per charger. Stored hashes name their own cost.
DEFAULT_PASSWORD_COST = 14
_SCRYPT_R, _SCRYPT_P = 8, 1
_VERIFIED_CACHE_MAX = 100_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS chargers (
    charger_id TEXT PRIMARY KEY,
    password_hash TEXT,
    site TEXT,
    tags TEXT NOT NULL DEFAULT '[]',
    description TEXT,
    created_at DOUBLE PRECISION NOT NULL
)
"""


class RegistryError(Exception):
    """Base of the registry's errors."""


class ChargerExistsError(RegistryError):
    """A charger with this id is already registered."""


class ChargerNotFoundError(RegistryError):
    """No charger with this id is registered."""


def hash_password(password: str, cost: int = DEFAULT_PASSWORD_COST) -> str:
    """A salted scrypt hash at N = 2**cost, in the self-describing stored form."""
    n = 2**cost
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(),
        salt=salt,
        n=n,
        r=_SCRYPT_R,
        p=_SCRYPT_P,
        dklen=32,
        maxmem=_scrypt_memory(n, _SCRYPT_R),
    )
    b64 = base64.b64encode
    return f"scrypt${n}${_SCRYPT_R}${_SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def _scrypt_memory(n: int, r: int) -> int:
    """Room for scrypt's 128 * N * r bytes and its bookkeeping (OpenSSL's default limit,
    32 MiB, stops at N = 2**14 with r = 8)."""
    return 2 * 128 * n * r


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
            maxmem=_scrypt_memory(int(n), int(r)),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


@dataclass(frozen=True, slots=True)
class Charger:
    charger_id: str
    site: str | None
    tags: list[str] = field(default_factory=list)
    description: str | None = None
    created_at: float = 0.0
    has_password: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.charger_id,
            "site": self.site,
            "tags": list(self.tags),
            "description": self.description,
            "createdAt": self.created_at,
            "hasPassword": self.has_password,
        }


class ChargerRegistry:
    """Registered chargers in the shared database (table ``chargers``)."""

    def __init__(self, db: Database, *, password_cost: int = DEFAULT_PASSWORD_COST) -> None:
        self._db = db
        self.password_cost = password_cost
        self._known: set[str] = set()
        # charger id -> (stored hash, fingerprint of the password that matched it)
        self._verified: dict[str, tuple[str, bytes]] = {}
        self._hashes = _PasswordHashReader(db)

    async def create_schema(self) -> None:
        await self._db.execute(SCHEMA)

    async def register(
        self,
        charger_id: str,
        password: str | None,
        *,
        site: str | None = None,
        tags: list[str] | None = None,
        description: str | None = None,
    ) -> Charger:
        validate_charger_id(charger_id)
        hashed = (
            await asyncio.to_thread(hash_password, password, self.password_cost)
            if password
            else None
        )
        now = time.time()
        changed = await self._db.execute(
            "INSERT INTO chargers (charger_id, password_hash, site, tags, description, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (charger_id) DO NOTHING",
            (charger_id, hashed, site, json.dumps(tags or []), description, now),
        )
        if changed == 0:
            raise ChargerExistsError(f"charger {charger_id!r} is already registered")
        self._known.add(charger_id)
        return Charger(charger_id, site, tags or [], description, now, hashed is not None)

    async def set_password(self, charger_id: str, password: str) -> None:
        hashed = await asyncio.to_thread(hash_password, password, self.password_cost)
        changed = await self._db.execute(
            "UPDATE chargers SET password_hash = ? WHERE charger_id = ?", (hashed, charger_id)
        )
        if changed == 0:
            raise ChargerNotFoundError(f"charger {charger_id!r} is not registered")
        self._verified.pop(charger_id, None)

    async def delete(self, charger_id: str) -> None:
        changed = await self._db.execute("DELETE FROM chargers WHERE charger_id = ?", (charger_id,))
        if changed == 0:
            raise ChargerNotFoundError(f"charger {charger_id!r} is not registered")
        self._known.discard(charger_id)
        self._verified.pop(charger_id, None)

    async def exists(self, charger_id: str) -> bool:
        """Cached once seen: registrations are rare, shadow updates are not."""
        if charger_id in self._known:
            return True
        row = await self._db.fetchone("SELECT 1 FROM chargers WHERE charger_id = ?", (charger_id,))
        if row is not None:
            self._known.add(charger_id)
        return row is not None

    async def registered(self, charger_id: str) -> bool:
        """Whether the charger is registered now (read, not cached: another process may
        have just removed it); a charger found gone is forgotten here too."""
        row = await self._db.fetchone("SELECT 1 FROM chargers WHERE charger_id = ?", (charger_id,))
        if row is None:
            self.forget(charger_id)
            return False
        self._known.add(charger_id)
        return True

    def forget(self, charger_id: str) -> None:
        """Drop what is cached about the charger: the next check reads the database."""
        self._known.discard(charger_id)
        self._verified.pop(charger_id, None)

    async def get(self, charger_id: str) -> Charger:
        row = await self._db.fetchone(
            "SELECT charger_id, site, tags, description, created_at, password_hash"
            " FROM chargers WHERE charger_id = ?",
            (charger_id,),
        )
        if row is None:
            raise ChargerNotFoundError(f"charger {charger_id!r} is not registered")
        return _charger(row)

    async def list(self) -> list[Charger]:
        rows = await self._db.fetchall(
            "SELECT charger_id, site, tags, description, created_at, password_hash"
            " FROM chargers ORDER BY charger_id"
        )
        return [_charger(row) for row in rows]

    async def verify(self, charger_id: str, password: str) -> bool:
        """True when ``password`` is this charger's (always False for unknown ids).

        The stored hash is read every time (one indexed row): the API may have changed the
        password or removed the charger from another process. Only the scrypt check is
        cached, for the stored hash it was made against, so a reconnect costs a read.
        """
        stored = await self._hashes.read(charger_id)
        if stored is None:
            self._verified.pop(charger_id, None)
            return False
        fingerprint = hashlib.sha256(f"{charger_id}\0{password}".encode()).digest()
        cached = self._verified.get(charger_id)
        if cached is not None and cached[0] == stored:
            return hmac.compare_digest(cached[1], fingerprint)
        ok = await asyncio.to_thread(check_password, password, stored)
        if ok:
            if len(self._verified) >= _VERIFIED_CACHE_MAX:
                self._verified.clear()
            self._verified[charger_id] = (stored, fingerprint)
        return ok


class _PasswordHashReader:
    """Reads of stored password hashes that arrive together go to the database together.

    Why: every upgrade reads its charger's hash (see :meth:`ChargerRegistry.verify`), and
    in a reconnect storm thousands arrive at once; one query per charger would queue them
    all behind the database's thread one round trip at a time. A read that finds nothing
    waiting starts a query at once; those that arrive meanwhile share the next one.
    """

    MAX_BATCH = 500

    def __init__(self, db: Database, *, password_cost: int = DEFAULT_PASSWORD_COST) -> None:
        self._db = db
        self.password_cost = password_cost
        self._waiting: dict[str, list[asyncio.Future[str | None]]] = {}
        self._reading: asyncio.Task[None] | None = None

    async def read(self, charger_id: str) -> str | None:
        """The charger's stored hash; None when it is not registered or has no password."""
        answer: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(charger_id, []).append(answer)
        if self._reading is None or self._reading.done():
            self._reading = asyncio.get_running_loop().create_task(
                self._read_waiting(), name="registry-password-hashes"
            )
        return await answer

    async def _read_waiting(self) -> None:
        while self._waiting:
            ids = list(itertools.islice(self._waiting, self.MAX_BATCH))
            batch = {charger_id: self._waiting.pop(charger_id) for charger_id in ids}
            try:
                rows = await self._db.fetchall(
                    "SELECT charger_id, password_hash FROM chargers"
                    f" WHERE charger_id IN ({', '.join('?' for _ in ids)})",
                    ids,
                )
            except Exception as exc:  # each waiting upgrade answers it (503)
                for answers in batch.values():
                    for answer in answers:
                        if not answer.done():
                            answer.set_exception(exc)
                continue
            found = {str(charger_id): stored for charger_id, stored in rows}
            for charger_id, answers in batch.items():
                stored = found.get(charger_id)
                for answer in answers:
                    if not answer.done():
                        answer.set_result(None if stored is None else str(stored))


def _charger(row: tuple[Any, ...]) -> Charger:
    return Charger(
        charger_id=row[0],
        site=row[1],
        tags=json.loads(row[2] or "[]"),
        description=row[3],
        created_at=float(row[4]),
        has_password=row[5] is not None,
    )
