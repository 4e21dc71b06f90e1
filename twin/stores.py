"""Persistence of shadow documents, on the shared database (SQLite or PostgreSQL).

A row holds the public document (what ``shadow/get`` and the API return), the per-section
writes that later merges need, and a few columns derived from the document so that fleet
queries (online, vendor, model, firmware, has-delta, connector status) run in SQL.

Writes are conditional on the version read (optimistic concurrency): two twin workers
that race on one charger cannot both win; the loser reloads and applies again. A batch
writes its rows in charger-id order, whatever order its requests came in: two workers whose
batches share chargers then take the row locks in the same order and cannot deadlock
(PostgreSQL aborted whole batches with ``deadlock detected`` when each locked in arrival
order). Should the database still abort a batch for a reason that goes away by itself
(a deadlock with another writer, a serialization failure, a busy SQLite file),
:func:`is_transient` says so and the twin applies the batch again.
"""

from __future__ import annotations

import builtins
import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from chargetwin.database import Database, DatabaseError
from twin.documents import ShadowDocument

SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS shadows (
        charger_id TEXT PRIMARY KEY,
        version BIGINT NOT NULL,
        document TEXT NOT NULL,
        writes TEXT NOT NULL,
        online BOOLEAN NOT NULL DEFAULT FALSE,
        vendor TEXT,
        model TEXT,
        firmware_version TEXT,
        has_delta BOOLEAN NOT NULL DEFAULT FALSE,
        statuses TEXT NOT NULL DEFAULT '',
        updated_at DOUBLE PRECISION NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS shadows_has_delta ON shadows (has_delta)",
    "CREATE INDEX IF NOT EXISTS shadows_online ON shadows (online)",
)


@dataclass(frozen=True, slots=True)
class ShadowFilter:
    """Fleet query; ``None`` means "any"."""

    online: bool | None = None
    status: str | None = None
    vendor: str | None = None
    model: str | None = None
    firmware_version: str | None = None
    has_delta: bool | None = None
    charger_ids: tuple[str, ...] | None = None
    limit: int = 100
    offset: int = 0


@dataclass(frozen=True, slots=True)
class ShadowSummary:
    charger_id: str
    version: int
    online: bool
    vendor: str | None
    model: str | None
    firmware_version: str | None
    has_delta: bool
    statuses: dict[str, str]
    updated_at: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.charger_id,
            "version": self.version,
            "online": self.online,
            "vendor": self.vendor,
            "model": self.model,
            "firmwareVersion": self.firmware_version,
            "hasDelta": self.has_delta,
            "connectors": self.statuses,
            "updatedAt": self.updated_at,
        }


def _summary_columns(doc: ShadowDocument) -> tuple[bool, Any, Any, Any, bool, str]:
    reported = doc.reported
    point = _object(reported.get("chargePoint"))
    firmware = _object(reported.get("firmware"))
    connection = reported.get("connection")
    online = bool(connection.get("online")) if isinstance(connection, dict) else False
    connectors = reported.get("connectors")
    statuses = ""
    if isinstance(connectors, dict):
        statuses = json.dumps(
            {k: v.get("status") for k, v in sorted(connectors.items()) if isinstance(v, dict)},
            separators=(",", ":"),
        )
    return (
        online,
        _text(point.get("vendor")),
        _text(point.get("model")),
        _text(firmware.get("version")),
        bool(doc.encoded().delta),
        statuses,
    )


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


class ShadowStore:
    """Shadow documents keyed by charger id."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create_schema(self) -> None:
        for statement in SCHEMA:
            await self.db.execute(statement)

    async def load(self, charger_id: str) -> ShadowDocument | None:
        row = await self.db.fetchone(
            "SELECT version, document, writes FROM shadows WHERE charger_id = ?", (charger_id,)
        )
        if row is None:
            return None
        document = json.loads(row[1])
        return ShadowDocument.restore(
            charger_id, int(row[0]), float(document.get("timestamp", 0.0)), json.loads(row[2])
        )

    async def save_many(
        self,
        docs: builtins.list[tuple[ShadowDocument, int]],
        *,
        deletes: Sequence[tuple[str, int]] = (),
    ) -> tuple[builtins.list[bool], builtins.list[bool]]:
        """Save ``(document, version it was read at)`` pairs and delete ``(charger id,
        version)`` pairs in one transaction.

        Returns, per pair, whether it was written (False: someone else wrote first).
        Rows are written in charger-id order, so concurrent batches lock them in one order.
        """
        statements = [(doc.charger_id, _save_statement(doc, v)) for doc, v in docs]
        statements += [
            (cid, ("DELETE FROM shadows WHERE charger_id = ? AND version = ?", (cid, v)))
            for cid, v in deletes
        ]
        order = sorted(range(len(statements)), key=lambda i: statements[i][0])
        counts = await self.db.execute_batch([statements[i][1] for i in order])
        ok = [False] * len(statements)
        for i, count in zip(order, counts, strict=True):
            ok[i] = count == 1
        return ok[: len(docs)], ok[len(docs) :]

    async def versions(self, charger_ids: Sequence[str]) -> dict[str, int]:
        """The stored version of each of ``charger_ids`` that has a shadow (one query)."""
        if not charger_ids:
            return {}
        rows = await self.db.fetchall(
            "SELECT charger_id, version FROM shadows WHERE charger_id IN"
            f" ({', '.join('?' for _ in charger_ids)})",
            tuple(charger_ids),
        )
        return {str(r[0]): int(r[1]) for r in rows}

    async def get_document(self, charger_id: str) -> dict[str, Any] | None:
        """The public document, as stored (no merge state)."""
        row = await self.db.fetchone(
            "SELECT document FROM shadows WHERE charger_id = ?", (charger_id,)
        )
        return None if row is None else dict(json.loads(row[0]))

    async def list(self, query: ShadowFilter) -> builtins.list[ShadowSummary]:
        where, params = _where(query)
        rows = await self.db.fetchall(
            "SELECT charger_id, version, online, vendor, model, firmware_version, has_delta,"
            f" statuses, updated_at FROM shadows{where} ORDER BY charger_id LIMIT ? OFFSET ?",
            (*params, query.limit, query.offset),
        )
        return [
            ShadowSummary(
                charger_id=r[0],
                version=int(r[1]),
                online=bool(r[2]),
                vendor=r[3],
                model=r[4],
                firmware_version=r[5],
                has_delta=bool(r[6]),
                statuses=json.loads(r[7]) if r[7] else {},
                updated_at=float(r[8]),
            )
            for r in rows
        ]

    async def count(self, query: ShadowFilter) -> int:
        where, params = _where(query)
        row = await self.db.fetchone(f"SELECT COUNT(*) FROM shadows{where}", params)
        return int(row[0]) if row else 0

    async def online_chargers(self) -> builtins.list[tuple[str, str | None]]:
        """``(charger id, bridge id)`` of every charger whose shadow says online."""
        rows = await self.db.fetchall(
            "SELECT charger_id, document FROM shadows WHERE online = ?", (True,)
        )
        out = []
        for charger_id, document in rows:
            connection = json.loads(document)["state"]["reported"].get("connection", {})
            out.append((charger_id, connection.get("bridge")))
        return out

    async def delete(self, charger_id: str) -> bool:
        return await self.db.execute("DELETE FROM shadows WHERE charger_id = ?", (charger_id,)) > 0


def _save_statement(doc: ShadowDocument, read_version: int) -> tuple[str, tuple[Any, ...]]:
    document = doc.encoded().public()
    writes = doc.writes_text()
    columns = _summary_columns(doc)
    if read_version == 0:
        return (
            "INSERT INTO shadows (charger_id, version, document, writes, online, vendor, model,"
            " firmware_version, has_delta, statuses, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (charger_id) DO NOTHING",
            (doc.charger_id, doc.version, document, writes, *columns, doc.timestamp),
        )
    return (
        "UPDATE shadows SET version = ?, document = ?, writes = ?, online = ?, vendor = ?,"
        " model = ?, firmware_version = ?, has_delta = ?, statuses = ?, updated_at = ?"
        " WHERE charger_id = ? AND version = ?",
        (doc.version, document, writes, *columns, doc.timestamp, doc.charger_id, read_version),
    )


def _where(query: ShadowFilter) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("online", query.online),
        ("vendor", query.vendor),
        ("model", query.model),
        ("firmware_version", query.firmware_version),
        ("has_delta", query.has_delta),
    ):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if query.status is not None:
        # statuses is compact JSON {"1":"Available",...}; match the quoted status value.
        clauses.append("statuses LIKE ?")
        params.append(f'%:"{query.status}"%')
    if query.charger_ids is not None:
        if not query.charger_ids:
            clauses.append("1 = 0")
        else:
            clauses.append(f"charger_id IN ({', '.join('?' for _ in query.charger_ids)})")
            params.extend(query.charger_ids)
    return (" WHERE " + " AND ".join(clauses) if clauses else "", params)


# PostgreSQL's SQLSTATEs of a transaction aborted for a reason of the moment: deadlock
# detected, serialization failure, lock not available.
_TRANSIENT_SQLSTATES = frozenset({"40P01", "40001", "55P03"})


def is_transient(error: DatabaseError) -> bool:
    """Whether the statement failed for a reason that goes away by itself (try again)."""
    cause = error.__cause__
    sqlstate = getattr(cause, "sqlstate", None)
    if sqlstate in _TRANSIENT_SQLSTATES:
        return True
    if isinstance(cause, sqlite3.OperationalError):
        text = str(cause).lower()
        return "locked" in text or "busy" in text
    return False
