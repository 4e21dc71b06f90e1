"""Password-hash reads and writes of a reconnect storm, batched into a few queries.

Why: every upgrade reads its charger's hashes (:meth:`twin.registry.ChargerRegistry.verify`)
and may replace an old one; in a storm thousands arrive at once, and one query each would
queue them behind the database's thread one round trip at a time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from chargetwin.batched_reads import BatchedReads
from chargetwin.database import Database

log = logging.getLogger(__name__)

# (stored hash or None, (rotation id, new hash) of an open rotation or None)
Hashes = tuple[str | None, tuple[str, str] | None]


class PasswordHashReader:
    """Reads of stored password hashes that arrive together go to the database together.

    Why: every upgrade reads its charger's hash (see :meth:`ChargerRegistry.verify`), and
    in a reconnect storm thousands arrive at once (:mod:`chargetwin.batched_reads`).
    """

    MAX_BATCH = 500

    def __init__(self, db: Database, open_statuses: tuple[str, str]) -> None:
        self._db = db
        self._open = open_statuses
        self._reads: BatchedReads[str, Hashes] = BatchedReads(
            self._fetch, "registry-password-hashes", self.MAX_BATCH
        )

    async def read(self, charger_id: str) -> Hashes | None:
        """The charger's stored hash and its open rotation's (rotation id, new hash);
        None when it is not registered."""
        return await self._reads.read(charger_id)

    async def _fetch(self, ids: Sequence[str]) -> dict[str, Hashes]:
        rows = await self._db.fetchall(
            "SELECT c.charger_id, c.password_hash, r.rotation_id, r.new_hash"
            " FROM chargers c LEFT JOIN charger_credential_rotations r"
            " ON r.charger_id = c.charger_id AND r.status IN (?, ?)"
            f" WHERE c.charger_id IN ({', '.join('?' for _ in ids)})",
            [*self._open, *ids],
        )
        return {
            str(charger_id): (
                None if stored is None else str(stored),
                None if new_hash is None else (str(rotation_id), str(new_hash)),
            )
            for charger_id, stored, rotation_id, new_hash in rows
        }


class HashUpgrader:
    """Replaces old hashes by keyed ones, the replacements of a storm in a few batches.

    Compare-and-set on the old hash, so a password changed meanwhile by another process
    is never overwritten. A failed write is only logged: the next success tries again.
    """

    MAX_BATCH = 500

    def __init__(self, db: Database) -> None:
        self._db = db
        self._waiting: list[tuple[tuple[str, str, str], asyncio.Future[None]]] = []
        self._writing: asyncio.Task[None] | None = None

    async def replace(self, charger_id: str, old: str, new: str) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(((new, charger_id, old), done))
        if self._writing is None or self._writing.done():
            self._writing = asyncio.get_running_loop().create_task(
                self._write_waiting(), name="registry-password-upgrades"
            )
        await done

    async def _write_waiting(self) -> None:
        while self._waiting:
            batch = self._waiting[: self.MAX_BATCH]
            del self._waiting[: self.MAX_BATCH]
            sql = "UPDATE chargers SET password_hash = ? WHERE charger_id = ? AND password_hash = ?"
            try:
                await self._db.execute_batch([(sql, params) for params, _ in batch])
            except Exception as exc:
                log.warning("could not store %d upgraded password hashes: %s", len(batch), exc)
            for _, done in batch:
                if not done.done():
                    done.set_result(None)
