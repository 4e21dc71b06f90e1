"""Transactions and id tags in the shared database (SQLite or PostgreSQL).

Transactions must survive a bridge restart and be the same across bridge processes, so
they live in the database, not in memory: a charger that did not get the answer to its
StartTransaction sends it again (OCPP 1.6 section 4.8: transaction-related messages are
retried until answered) and must get the same transactionId back.
"""

from __future__ import annotations

import builtins
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from bridge.times import iso_time
from chargetwin.batched_reads import BatchedReads
from chargetwin.database import Database, DatabaseError, SQLiteDatabase

log = logging.getLogger(__name__)

TRANSACTIONS_SCHEMA = """
CREATE TABLE IF NOT EXISTS transactions (
    transaction_id INTEGER PRIMARY KEY,
    charger_id TEXT NOT NULL,
    connector_id INTEGER NOT NULL,
    id_tag TEXT NOT NULL,
    meter_start BIGINT NOT NULL,
    started_at DOUBLE PRECISION NOT NULL,
    reservation_id INTEGER,
    meter_stop BIGINT,
    stopped_at DOUBLE PRECISION,
    stop_reason TEXT,
    stop_id_tag TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    plug_start DOUBLE PRECISION,
    plug_end DOUBLE PRECISION,
    UNIQUE (charger_id, connector_id, id_tag, meter_start, started_at)
)
"""
# Columns added since the table was first made: added to an older table on start-up.
# Plug-in and plug-out times (EV-ChART plug_start/plug_end), which OCPP 2.0.1 stations
# report through TransactionEvent triggerReason and 1.6 chargers do not.
TRANSACTIONS_ADDED_COLUMNS = (("plug_start", "DOUBLE PRECISION"), ("plug_end", "DOUBLE PRECISION"))

# The last transaction id handed out, one row: several bridges allocate from it at once
# (an UPDATE ... RETURNING takes the row's lock, so each gets its own id, in order), where
# "MAX + 1" made them pick the same id and retry until they gave up.
TRANSACTION_IDS_SCHEMA = """
CREATE TABLE IF NOT EXISTS transaction_ids (
    name TEXT PRIMARY KEY,
    last_id BIGINT NOT NULL
)
"""
_COUNTER = "ocpp"

ID_TAGS_SCHEMA = """
CREATE TABLE IF NOT EXISTS id_tags (
    id_tag TEXT PRIMARY KEY,
    status TEXT,
    expiry DOUBLE PRECISION
)
"""

# OCPP 1.6 transactionId is an integer; stay within a signed 32-bit value.
_MAX_TRANSACTION_ID = 2**31 - 1
_ALLOCATE_ATTEMPTS = 20
# A StartTransaction is retried until answered (OCPP 1.6 section 4.8), after a reconnect
# at worst: one day covers any charger's retry schedule.
_RETRY_WINDOW_S = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class StartedTransaction:
    transaction_id: int
    retried: bool


@dataclass(frozen=True, slots=True)
class StoppedTransaction:
    transaction_id: int
    known: bool
    connector_id: int | None = None
    id_tag: str | None = None
    meter_start: int | None = None
    started_at: float | None = None


class TransactionStore:
    """The ``transactions`` table: idempotent start and stop."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_schema(self) -> None:
        await self._db.execute(TRANSACTIONS_SCHEMA)
        await self._add_columns()
        await self._db.execute(TRANSACTION_IDS_SCHEMA)
        # Seeded from the transactions already there (a database from before the counter).
        await self._db.execute(
            "INSERT INTO transaction_ids (name, last_id)"
            " SELECT ?, COALESCE(MAX(transaction_id), 0) FROM transactions"
            " WHERE true ON CONFLICT DO NOTHING",  # WHERE: SQLite's parser needs it here
            (_COUNTER,),
        )

    async def _add_columns(self) -> None:
        """The columns of TRANSACTIONS_ADDED_COLUMNS on a table made before them."""
        if not isinstance(self._db, SQLiteDatabase):
            for name, kind in TRANSACTIONS_ADDED_COLUMNS:
                await self._db.execute(
                    f"ALTER TABLE transactions ADD COLUMN IF NOT EXISTS {name} {kind}"
                )
            return
        for name, kind in TRANSACTIONS_ADDED_COLUMNS:
            if name in await self._sqlite_columns():
                continue
            try:
                await self._db.execute(f"ALTER TABLE transactions ADD COLUMN {name} {kind}")
            except DatabaseError:
                # The bridge and the API of one process both create this schema: the other
                # may have added the column since we looked.
                if name not in await self._sqlite_columns():
                    raise

    async def _sqlite_columns(self) -> set[str]:
        return {str(r[1]) for r in await self._db.fetchall("PRAGMA table_info(transactions)")}

    async def start(
        self,
        charger_id: str,
        connector_id: int,
        id_tag: str,
        meter_start: int,
        started_at: float,
        reservation_id: int | None = None,
        *,
        exact_time: bool = True,
    ) -> StartedTransaction:
        """The transaction id for this start, the same one for a retried identical start.

        ``exact_time`` False: ``started_at`` is our receipt time (the charger's was not
        believed), so a retry is the open transaction of the same connector, tag and meter
        start received within :data:`_RETRY_WINDOW_S` instead.
        """
        key = (charger_id, connector_id, id_tag, meter_start, started_at)
        for _ in range(_ALLOCATE_ATTEMPTS):
            async with self._db.transaction() as tx:
                if exact_time:
                    rows = await tx.fetchall(
                        "SELECT transaction_id FROM transactions WHERE charger_id = ?"
                        " AND connector_id = ? AND id_tag = ? AND meter_start = ?"
                        " AND started_at = ?",
                        key,
                    )
                else:
                    rows = await tx.fetchall(
                        "SELECT transaction_id FROM transactions WHERE charger_id = ?"
                        " AND connector_id = ? AND id_tag = ? AND meter_start = ?"
                        " AND stopped_at IS NULL AND created_at > ?"
                        " ORDER BY transaction_id DESC LIMIT 1",
                        (*key[:4], time.time() - _RETRY_WINDOW_S),
                    )
                if rows:
                    return StartedTransaction(int(rows[0][0]), retried=True)
                (next_id,) = (
                    await tx.fetchall(
                        "UPDATE transaction_ids SET last_id = last_id + 1 WHERE name = ?"
                        " RETURNING last_id",
                        (_COUNTER,),
                    )
                )[0]
                if int(next_id) > _MAX_TRANSACTION_ID:
                    raise DatabaseError("transaction ids exhausted (OCPP 1.6 uses 32-bit ids)")
                # An identical start committed by another bridge meanwhile (a charger's retry
                # that reached the other one): the insert does nothing and the loop finds it.
                inserted = await tx.execute(
                    "INSERT INTO transactions (transaction_id, charger_id, connector_id, id_tag,"
                    " meter_start, started_at, reservation_id, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (int(next_id), *key, reservation_id, time.time()),
                )
                if inserted == 1:
                    return StartedTransaction(int(next_id), retried=False)
        raise DatabaseError(f"{charger_id}: could not allocate a transaction id")

    async def stop(
        self,
        charger_id: str,
        transaction_id: int,
        meter_stop: int,
        stopped_at: float,
        reason: str,
        id_tag: str | None,
    ) -> StoppedTransaction:
        """Record the stop; a retried stop writes the same values again (idempotent)."""
        async with self._db.transaction() as tx:
            await tx.execute(
                "UPDATE transactions SET meter_stop = ?, stopped_at = ?, stop_reason = ?,"
                " stop_id_tag = ? WHERE transaction_id = ? AND charger_id = ?",
                (meter_stop, stopped_at, reason, id_tag, transaction_id, charger_id),
            )
            rows = await tx.fetchall(
                "SELECT connector_id, id_tag, meter_start, started_at FROM transactions"
                " WHERE transaction_id = ? AND charger_id = ?",
                (transaction_id, charger_id),
            )
        if not rows:
            return StoppedTransaction(transaction_id, known=False)
        connector_id, start_tag, meter_start, started_at = rows[0]
        return StoppedTransaction(
            transaction_id,
            known=True,
            connector_id=int(connector_id),
            id_tag=str(start_tag),
            meter_start=int(meter_start),
            started_at=float(started_at),
        )

    async def plugged(
        self, charger_id: str, transaction_id: int, start: float | None, end: float | None
    ) -> None:
        """Record when the vehicle was plugged in (``start``) or out (``end``): the earliest
        report of each counts, so an event sent again or out of order changes nothing."""
        for column, at in (("plug_start", start), ("plug_end", end)):
            if at is None:
                continue
            await self._db.execute(
                f"UPDATE transactions SET {column} = ? WHERE transaction_id = ?"
                f" AND charger_id = ? AND ({column} IS NULL OR {column} > ?)",
                (at, transaction_id, charger_id, at),
            )

    async def get(self, transaction_id: int) -> dict[str, Any] | None:
        """One transaction as a dict (for tests and tools)."""
        row = await self._db.fetchone(
            "SELECT transaction_id, charger_id, connector_id, id_tag, meter_start, started_at,"
            " meter_stop, stopped_at, stop_reason, stop_id_tag, plug_start, plug_end"
            " FROM transactions WHERE transaction_id = ?",
            (transaction_id,),
        )
        if row is None:
            return None
        names = (
            "transactionId", "chargerId", "connectorId", "idTag", "meterStart", "startedAt",
            "meterStop", "stoppedAt", "stopReason", "stopIdTag", "plugStart", "plugEnd",
        )  # fmt: skip
        return dict(zip(names, row, strict=True))


class BootHistory:
    """Whether a BootNotification of a charger was ever accepted, by any bridge.

    Read from the twin's shadow table: its ``vendor`` column is
    ``reported.chargePoint.vendor``, which only an accepted BootNotification writes
    (``chargePointVendor`` is required there), and a factory reset or unregistering deletes
    the shadow with it. Every connection asks once (a charger that reconnects need not boot
    again); a reconnect storm's questions share a few queries
    (:mod:`chargetwin.batched_reads`).
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._reads: BatchedReads[str, bool] = BatchedReads(self._fetch, "boot-history")

    async def booted_before(self, charger_id: str) -> bool:
        return bool(await self._reads.read(charger_id))

    async def _fetch(self, ids: Sequence[str]) -> dict[str, bool]:
        rows = await self._db.fetchall(
            "SELECT charger_id, vendor FROM shadows"
            f" WHERE charger_id IN ({', '.join('?' for _ in ids)})",
            list(ids),
        )
        return {str(charger_id): vendor is not None for charger_id, vendor in rows}


class ReportedConfigs:
    """The configuration a charger's shadow holds (``reported.config``), read when its
    GetConfiguration answer after a boot is reported: only what differs is written
    (:meth:`bridge.reconcilers.Reconciler.record_configuration`). A boot storm's reads share
    a few queries (:mod:`chargetwin.batched_reads`)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._reads: BatchedReads[str, dict[str, Any]] = BatchedReads(
            self._fetch, "reported-configs"
        )

    async def held(self, charger_id: str) -> dict[str, Any]:
        """``reported.config`` of the charger's shadow; ``{}`` when it has none."""
        return await self._reads.read(charger_id) or {}

    async def _fetch(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        rows = await self._db.fetchall(
            "SELECT charger_id, document FROM shadows"
            f" WHERE charger_id IN ({', '.join('?' for _ in ids)})",
            list(ids),
        )
        out: dict[str, dict[str, Any]] = {}
        for charger_id, document in rows:
            config = orjson.loads(document).get("state", {}).get("reported", {}).get("config")
            if isinstance(config, dict):
                out[str(charger_id)] = config
        return out


class IdTagStore:
    """The ``id_tags`` table behind Authorize and the idTagInfo of transactions.

    An empty table accepts every idTag (a fresh installation lets cars charge); once the
    table holds any row, an idTag not in it is ``Invalid``.
    """

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_schema(self) -> None:
        await self._db.execute(ID_TAGS_SCHEMA)

    async def put(self, id_tag: str, status: str = "Accepted", expiry: float | None = None) -> None:
        await self._db.execute(
            "INSERT INTO id_tags (id_tag, status, expiry) VALUES (?, ?, ?)"
            " ON CONFLICT (id_tag) DO UPDATE SET status = excluded.status,"
            " expiry = excluded.expiry",
            (id_tag, status, expiry),
        )

    async def get(self, id_tag: str) -> tuple[str, float | None] | None:
        """``(status, expiry)`` as stored, or None when the tag is not in the table."""
        row = await self._db.fetchone(
            "SELECT status, expiry FROM id_tags WHERE id_tag = ?", (id_tag,)
        )
        if row is None:
            return None
        return str(row[0] or "Accepted"), None if row[1] is None else float(row[1])

    async def list(
        self, *, limit: int = 1000, offset: int = 0
    ) -> builtins.list[tuple[str, str, float | None]]:
        """``(id_tag, status, expiry)`` rows ordered by tag."""
        rows = await self._db.fetchall(
            "SELECT id_tag, status, expiry FROM id_tags ORDER BY id_tag LIMIT ? OFFSET ?",
            (limit, offset),
        )
        return [
            (str(r[0]), str(r[1] or "Accepted"), None if r[2] is None else float(r[2]))
            for r in rows
        ]

    async def count(self) -> int:
        row = await self._db.fetchone("SELECT COUNT(*) FROM id_tags")
        return int(row[0]) if row else 0

    async def delete(self, id_tag: str) -> bool:
        """Remove a tag; True when it was there. (An emptied table accepts every tag.)"""
        return await self._db.execute("DELETE FROM id_tags WHERE id_tag = ?", (id_tag,)) == 1

    async def lookup(self, id_tag: str) -> dict[str, Any]:
        """The IdTagInfo (camelCase, OCPP 1.6 section 7 IdTagInfo) for ``id_tag``."""
        row = await self._db.fetchone(
            "SELECT status, expiry FROM id_tags WHERE id_tag = ?", (id_tag,)
        )
        if row is None:
            any_row = await self._db.fetchone("SELECT 1 FROM id_tags LIMIT 1")
            return {"status": "Invalid" if any_row is not None else "Accepted"}
        status = str(row[0] or "Accepted")
        info: dict[str, Any] = {"status": status}
        if row[1] is not None:
            expiry = float(row[1])
            if status == "Accepted" and expiry < time.time():
                info["status"] = "Expired"
            info["expiryDate"] = iso_time(expiry)
        return info
