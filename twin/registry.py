"""The charger registry: which charger ids exist, the password each one connects with,
and the rotation of that password.

The API registers chargers and asks for rotations; the bridge checks passwords at the
websocket upgrade and carries rotations to the chargers; the twin refuses shadow updates
for ids that are not registered. Hashes are made and checked by :mod:`twin.passwords`
(a keyed fast hash; older scrypt hashes are still checked and replaced on success).

A rotation (table ``charger_credential_rotations``, one row per charger: its latest) is
desired state for a secret, kept out of the shadow that viewers read::

    pending --charger answers Accepted--> accepted --connects with the new one--> done
       |                                                                  ^
       +--------------- connects with the new one (answer lost) ---------+
       +--charger answers Rejected / NotSupported / an error--> failed (the old one stays)

While ``pending`` or ``accepted`` both the old and the new password are accepted; the
new password in clear is kept only until ``done`` or ``failed`` (the bridge sends it
again when a charger comes back with the old one after accepting).

Not for ever: ``old_password_grace`` (:data:`OLD_PASSWORD_GRACE`, 24 h) after the charger
accepted, the old password expires. The rotation ends ``done`` with the reason
:data:`EXPIRED_REASON` (the new password becomes the only one), heard by ``on_rotation``
like every change (the bridge writes it to the audit log). A check of the old password
after that moment ends it so and fails; :meth:`ChargerRegistry.expire_old_passwords` ends
those nobody tried (the bridge calls it periodically).
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import hmac
import json
import logging
import secrets
import string
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from chargetwin.database import Database
from chargetwin.topics import validate_charger_id
from twin.hash_batches import HashUpgrader, PasswordHashReader
from twin.passwords import (
    MIN_PASSWORD_LENGTH,
    PasswordHasher,
    WeakPasswordError,
    check_scrypt,
    check_strength,
)

__all__ = ["WeakPasswordError"]

log = logging.getLogger(__name__)

_VERIFIED_CACHE_MAX = 100_000
OLD_PASSWORD_GRACE = 24 * 3600.0
"""Seconds the old password stays valid after the charger accepted a new one."""
EXPIRED_REASON = "old password expired"
"""The reason of a rotation ended by the expiry of the old password, not by a connect."""
# A rotated password: 20 characters of [A-Za-z0-9] (~119 bits). Printable, so the same
# string is the OCPP 2.0.1 BasicAuthPassword and, as 40 hex digits of its 20 bytes, the
# OCPP 1.6 AuthorizationKey (security whitepaper: 16-20 bytes, hexadecimal).
ROTATED_PASSWORD_LENGTH = 20
_ALPHABET = string.ascii_letters + string.digits

SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS chargers (
    charger_id TEXT PRIMARY KEY,
    password_hash TEXT,
    site TEXT,
    tags TEXT NOT NULL DEFAULT '[]',
    description TEXT,
    created_at DOUBLE PRECISION NOT NULL
)
""",
    """
CREATE TABLE IF NOT EXISTS charger_credential_rotations (
    charger_id TEXT PRIMARY KEY,
    rotation_id TEXT NOT NULL,
    status TEXT NOT NULL,
    new_hash TEXT,
    secret TEXT,
    reason TEXT,
    requested_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
)
""",
)


class RegistryError(Exception):
    """Base of the registry's errors.

    RegistryError
    ├── ChargerExistsError
    ├── ChargerNotFoundError
    └── RotationError
        └── RotationInProgressError
    (WeakPasswordError, a ValueError, comes from :mod:`twin.passwords`.)
    """


class ChargerExistsError(RegistryError):
    """A charger with this id is already registered."""


class ChargerNotFoundError(RegistryError):
    """No charger with this id is registered."""


class RotationError(RegistryError):
    """The charger's password cannot be rotated (e.g. it authenticates by certificate)."""


class RotationInProgressError(RotationError):
    """A rotation of this charger's password is still pending or accepted."""


class RotationStatus(StrEnum):
    PENDING = "pending"
    """Asked; the charger has not answered the ChangeConfiguration yet."""
    ACCEPTED = "accepted"
    """The charger accepted the new password; it has not connected with it yet."""
    DONE = "done"
    """The charger connected with the new password; the old one no longer works."""
    FAILED = "failed"
    """The charger refused the new password (see ``reason``); the old one stays."""


_OPEN = (RotationStatus.PENDING.value, RotationStatus.ACCEPTED.value)


@dataclass(frozen=True, slots=True)
class Rotation:
    """A password rotation as anyone may see it: never the password."""

    charger_id: str
    rotation_id: str
    status: RotationStatus
    reason: str | None
    requested_at: float
    updated_at: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "rotationId": self.rotation_id,
            "status": self.status.value,
            "reason": self.reason,
            "requestedAt": self.requested_at,
            "updatedAt": self.updated_at,
        }


RotationListener = Callable[[Rotation], Awaitable[None]]


def generate_password() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(ROTATED_PASSWORD_LENGTH))


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
    """Registered chargers in the shared database (tables ``chargers`` and
    ``charger_credential_rotations``).

    ``password_key`` is the server-side key of :mod:`twin.passwords`; every process that
    sets or checks passwords (API, bridge) needs the same one. Without it new hashes are
    scrypt (tools and tests that only register) and keyed hashes are refused.
    ``on_rotation`` hears every rotation change this process makes (the audit log).
    """

    def __init__(
        self,
        db: Database,
        *,
        password_key: bytes | None = None,
        on_rotation: RotationListener | None = None,
        old_password_grace: float = OLD_PASSWORD_GRACE,
    ) -> None:
        self._db = db
        self.old_password_grace = old_password_grace
        self.hasher = PasswordHasher(password_key)
        self.on_rotation = on_rotation
        self._known: set[str] = set()
        # charger id -> (stored scrypt hash, fingerprint of the password that matched it):
        # only scrypt checks are worth caching; keyed ones take microseconds.
        self._verified: dict[str, tuple[str, bytes]] = {}
        self._hashes = PasswordHashReader(db, _OPEN)
        # charger id -> whether its last password check found an open rotation: a boot
        # needs no rotation query when the upgrade just before it found none.
        self._rotating: dict[str, bool] = {}
        self._upgrades = HashUpgrader(db)

    async def create_schema(self) -> None:
        for statement in SCHEMA:
            await self._db.execute(statement)

    async def register(
        self,
        charger_id: str,
        password: str | None,
        *,
        site: str | None = None,
        tags: list[str] | None = None,
        description: str | None = None,
    ) -> Charger:
        """Raises :class:`WeakPasswordError` for a password under 16 characters."""
        validate_charger_id(charger_id)
        hashed = await self._hash(password) if password else None
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

    async def _hash(self, password: str) -> str:
        check_strength(password)
        if self.hasher.keyed:
            return self.hasher.hash(password)
        # Without a key the hash is scrypt (tens of ms): off the event loop.
        return await asyncio.to_thread(self.hasher.hash, password)

    async def set_password(self, charger_id: str, password: str) -> None:
        """Replace the password at once (an open rotation ends: its password is dropped)."""
        hashed = await self._hash(password)
        changed = await self._db.execute(
            "UPDATE chargers SET password_hash = ? WHERE charger_id = ?", (hashed, charger_id)
        )
        if changed == 0:
            raise ChargerNotFoundError(f"charger {charger_id!r} is not registered")
        await self._db.execute(
            "DELETE FROM charger_credential_rotations WHERE charger_id = ?", (charger_id,)
        )
        self._verified.pop(charger_id, None)

    async def delete(self, charger_id: str) -> None:
        changed = await self._db.execute("DELETE FROM chargers WHERE charger_id = ?", (charger_id,))
        if changed == 0:
            raise ChargerNotFoundError(f"charger {charger_id!r} is not registered")
        await self._db.execute(
            "DELETE FROM charger_credential_rotations WHERE charger_id = ?", (charger_id,)
        )
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
        self._rotating.pop(charger_id, None)

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

    # --- password checks -----------------------------------------------------------------
    async def verify(self, charger_id: str, password: str) -> bool:
        """True when ``password`` is this charger's (always False for unknown ids); during
        a rotation the new password is accepted too, and its first use ends the rotation.

        The stored hashes are read every time (one indexed row, batched in a storm): the
        API may have changed the password or removed the charger from another process.
        A scrypt hash that matches is replaced by a keyed one (hashes of passwords shorter
        than 16 characters stay scrypt until the password is rotated).
        """
        hashes = await self._hashes.read(charger_id)
        if hashes is None:
            self._verified.pop(charger_id, None)
            return False
        stored, pending = hashes
        self._rotating[charger_id] = pending is not None
        if stored is not None and await self._matches(charger_id, password, stored):
            if pending is not None and await self._expire_if_due(charger_id, pending[0]):
                return False  # the old password of an accepted rotation, past its grace
            if self.hasher.outdated(stored) and len(password) >= MIN_PASSWORD_LENGTH:
                await self._upgrades.replace(charger_id, stored, self.hasher.hash(password))
            return True
        if pending is not None:
            rotation_id, new_hash = pending
            if self.hasher.check_fast(password, new_hash):
                await self._finish_rotation(charger_id, rotation_id, new_hash)
                return True
        return False

    async def _matches(self, charger_id: str, password: str, stored: str) -> bool:
        fast = self.hasher.check_fast(password, stored)
        if fast is not None:
            return fast
        fingerprint = hashlib.sha256(f"{charger_id}\0{password}".encode()).digest()
        cached = self._verified.get(charger_id)
        if cached is not None and cached[0] == stored:
            return hmac.compare_digest(cached[1], fingerprint)
        ok = await asyncio.to_thread(check_scrypt, password, stored)
        if ok:
            if len(self._verified) >= _VERIFIED_CACHE_MAX:
                self._verified.clear()
            self._verified[charger_id] = (stored, fingerprint)
        return ok

    # --- rotations -----------------------------------------------------------------------
    async def start_rotation(self, charger_id: str) -> Rotation:
        """A new password for the charger, pending until the bridge has set it there.

        Raises :class:`ChargerNotFoundError`, :class:`RotationError` for a charger without
        a password, :class:`RotationInProgressError` while the last one is still open.
        """
        charger = await self.get(charger_id)
        if not charger.has_password:
            raise RotationError(
                f"charger {charger_id!r} has no password (it authenticates by certificate)"
            )
        if not self.hasher.keyed:
            raise RotationError("this process has no charger password key")
        secret = generate_password()
        now = time.time()
        rotation_id = uuid.uuid4().hex
        # One statement: a concurrent request for the same charger finds the row open.
        changed = await self._db.execute(
            "INSERT INTO charger_credential_rotations (charger_id, rotation_id, status,"
            " new_hash, secret, reason, requested_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, NULL, ?, ?) ON CONFLICT (charger_id) DO UPDATE SET"
            " rotation_id = excluded.rotation_id, status = excluded.status,"
            " new_hash = excluded.new_hash, secret = excluded.secret, reason = NULL,"
            " requested_at = excluded.requested_at, updated_at = excluded.updated_at"
            " WHERE charger_credential_rotations.status NOT IN (?, ?)",
            (
                charger_id,
                rotation_id,
                RotationStatus.PENDING.value,
                self.hasher.hash(secret),
                secret,
                now,
                now,
                *_OPEN,
            ),
        )
        if changed == 0:
            raise RotationInProgressError(
                f"a password rotation of charger {charger_id!r} is still open"
            )
        return Rotation(charger_id, rotation_id, RotationStatus.PENDING, None, now, now)

    def may_be_rotating(self, charger_id: str) -> bool:
        """False only when this process's last check of the charger's password found no
        open rotation (one asked since then is announced to the bridge separately)."""
        return self._rotating.get(charger_id, True)

    async def rotation(self, charger_id: str) -> Rotation | None:
        """The charger's latest rotation, without its password."""
        row = await self._db.fetchone(
            "SELECT charger_id, rotation_id, status, reason, requested_at, updated_at"
            " FROM charger_credential_rotations WHERE charger_id = ?",
            (charger_id,),
        )
        return None if row is None else _rotation(row)

    async def rotation_secret(self, charger_id: str) -> tuple[Rotation, str] | None:
        """The open rotation and its new password, for the bridge to send to the charger."""
        row = await self._db.fetchone(
            "SELECT charger_id, rotation_id, status, reason, requested_at, updated_at, secret"
            " FROM charger_credential_rotations"
            " WHERE charger_id = ? AND status IN (?, ?) AND secret IS NOT NULL",
            (charger_id, *_OPEN),
        )
        return None if row is None else (_rotation(row[:6]), str(row[6]))

    async def rotation_answered(
        self, charger_id: str, rotation_id: str, accepted: bool, reason: str | None = None
    ) -> Rotation | None:
        """The charger's answer to the new password: Accepted keeps both valid until it
        connects with the new one; anything else fails the rotation and keeps the old.
        None when the rotation is no longer open (done meanwhile, or replaced)."""
        status = RotationStatus.ACCEPTED if accepted else RotationStatus.FAILED
        now = time.time()
        if accepted:
            sql = (
                "UPDATE charger_credential_rotations SET status = ?, reason = ?, updated_at = ?"
                " WHERE charger_id = ? AND rotation_id = ? AND status IN (?, ?)"
            )
        else:
            sql = (
                "UPDATE charger_credential_rotations SET status = ?, reason = ?,"
                " updated_at = ?, new_hash = NULL, secret = NULL"
                " WHERE charger_id = ? AND rotation_id = ? AND status IN (?, ?)"
            )
        changed = await self._db.execute(
            sql, (status.value, reason, now, charger_id, rotation_id, *_OPEN)
        )
        if changed == 0:
            return None
        rotation = await self.rotation(charger_id)
        if rotation is not None:
            await self._announce(rotation)
        return rotation

    async def _expire_if_due(self, charger_id: str, rotation_id: str) -> bool:
        """End the rotation when the charger accepted it more than the grace ago (the old
        password just matched); True when it did (the old password no longer works).
        One query, only for a charger with an open rotation."""
        row = await self._db.fetchone(
            "SELECT new_hash FROM charger_credential_rotations"
            " WHERE charger_id = ? AND rotation_id = ? AND status = ? AND updated_at <= ?",
            (
                charger_id,
                rotation_id,
                RotationStatus.ACCEPTED.value,
                time.time() - self.old_password_grace,
            ),
        )
        if row is None or row[0] is None:
            return False
        log.warning(
            "%s: old password refused: it expired %g s after the charger accepted the new "
            "one (rotation %s)",
            charger_id,
            self.old_password_grace,
            rotation_id,
        )
        await self._finish_rotation(charger_id, rotation_id, str(row[0]), EXPIRED_REASON)
        return True

    async def expire_old_passwords(self) -> builtins.list[Rotation]:
        """End every rotation whose charger accepted the new password more than
        ``old_password_grace`` ago and has not connected with it: the old password stops
        working. Returns the rotations ended (each is announced to ``on_rotation``)."""
        rows = await self._db.fetchall(
            "SELECT charger_id, rotation_id, new_hash FROM charger_credential_rotations"
            " WHERE status = ? AND updated_at <= ? AND new_hash IS NOT NULL",
            (RotationStatus.ACCEPTED.value, time.time() - self.old_password_grace),
        )
        ended: builtins.list[Rotation] = []
        for charger_id, rotation_id, new_hash in rows:
            if await self._finish_rotation(
                str(charger_id), str(rotation_id), str(new_hash), EXPIRED_REASON
            ):
                log.warning(
                    "%s: old password expired %g s after the charger accepted the new one "
                    "without connecting with it (rotation %s)",
                    charger_id,
                    self.old_password_grace,
                    rotation_id,
                )
                rotation = await self.rotation(str(charger_id))
                if rotation is not None:
                    ended.append(rotation)
        return ended

    async def _finish_rotation(
        self, charger_id: str, rotation_id: str, new_hash: str, reason: str | None = None
    ) -> bool:
        """The charger connected with its new password (or the old one expired): the new
        one becomes the only one. False when the rotation was no longer open."""
        async with self._db.transaction() as tx:
            changed = await tx.execute(
                "UPDATE charger_credential_rotations SET status = ?, updated_at = ?,"
                " new_hash = NULL, secret = NULL, reason = ?"
                " WHERE charger_id = ? AND rotation_id = ? AND status IN (?, ?)",
                (RotationStatus.DONE.value, time.time(), reason, charger_id, rotation_id, *_OPEN),
            )
            if changed:
                await tx.execute(
                    "UPDATE chargers SET password_hash = ? WHERE charger_id = ?",
                    (new_hash, charger_id),
                )
        self._verified.pop(charger_id, None)
        self._rotating.pop(charger_id, None)
        if changed:
            rotation = await self.rotation(charger_id)
            if rotation is not None:
                await self._announce(rotation)
        return bool(changed)

    async def _announce(self, rotation: Rotation) -> None:
        if self.on_rotation is not None:
            await self.on_rotation(rotation)


def _charger(row: tuple[Any, ...]) -> Charger:
    return Charger(
        charger_id=row[0],
        site=row[1],
        tags=json.loads(row[2] or "[]"),
        description=row[3],
        created_at=float(row[4]),
        has_password=row[5] is not None,
    )


def _rotation(row: tuple[Any, ...]) -> Rotation:
    return Rotation(
        charger_id=str(row[0]),
        rotation_id=str(row[1]),
        status=RotationStatus(row[2]),
        reason=row[3],
        requested_at=float(row[4]),
        updated_at=float(row[5]),
    )
