"""Work orders: the one ``work_orders`` table that rules, inspections, maintenance windows
and operators all write, with a history of every change (who, when).

The rules engine opened the table first with a minimal set of columns;
:meth:`WorkOrderStore.create_schema` adds the rest in place (SQLite ``PRAGMA
table_info``, PostgreSQL ``ADD COLUMN IF NOT EXISTS``), so an installation upgraded from
it keeps its rows and there is one table, not two. Kept free of FastAPI: the rules
component imports it.

Lifecycle (``TRANSITIONS``)::

    open ──▶ in_progress ──▶ resolved
      │  ◀──     │               │ (reopen)
      └──────────┴──▶ cancelled ─┘
"""

from __future__ import annotations

import builtins
import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from chargetwin.database import Database, DatabaseError, SQLiteDatabase, Transaction

STATUSES = ("open", "in_progress", "resolved", "cancelled")
SOURCES = ("manual", "rule", "inspection", "window")
PRIORITIES = ("low", "normal", "high", "urgent")
TRANSITIONS: dict[str, frozenset[str]] = {
    "open": frozenset({"in_progress", "resolved", "cancelled"}),
    "in_progress": frozenset({"open", "resolved", "cancelled"}),
    "resolved": frozenset({"open"}),
    "cancelled": frozenset({"open"}),
}

BASE_SCHEMA = """CREATE TABLE IF NOT EXISTS work_orders (
    id TEXT PRIMARY KEY, alert_id TEXT UNIQUE, rule TEXT, charger_id TEXT, connector_id TEXT,
    title TEXT NOT NULL, description TEXT, status TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL)"""

# Columns added to the rules engine's minimal table, in order.
EXTRA_COLUMNS: tuple[tuple[str, str], ...] = (
    ("source", "TEXT"),
    ("priority", "TEXT"),
    ("assignee", "TEXT"),
    ("window_id", "TEXT"),
    ("inspection_id", "TEXT"),
    ("created_by", "TEXT"),
    ("updated_at", "DOUBLE PRECISION"),
    ("started_at", "DOUBLE PRECISION"),
    ("resolved_at", "DOUBLE PRECISION"),
    ("cancelled_at", "DOUBLE PRECISION"),
)

EVENTS_SCHEMA = """CREATE TABLE IF NOT EXISTS work_order_events (
    id TEXT PRIMARY KEY, work_order_id TEXT NOT NULL, at DOUBLE PRECISION NOT NULL,
    actor TEXT NOT NULL, kind TEXT NOT NULL, data TEXT NOT NULL)"""

INDEXES = (
    "CREATE INDEX IF NOT EXISTS work_orders_by_charger ON work_orders (charger_id, created_at)",
    "CREATE INDEX IF NOT EXISTS work_order_events_by_order ON work_order_events "
    "(work_order_id, id)",
)

COLUMNS = (
    "id", "alert_id", "rule", "charger_id", "connector_id", "title", "description", "status",
    "created_at", *(name for name, _ in EXTRA_COLUMNS),
)  # fmt: skip
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM work_orders"


class WorkOrderError(Exception):
    """Base of the work-order errors."""


class WorkOrderNotFound(WorkOrderError):
    pass


class InvalidTransition(WorkOrderError):
    pass


@dataclass(frozen=True, slots=True)
class WorkOrder:
    id: str
    title: str
    status: str
    created_at: float
    source: str
    alert_id: str | None = None
    rule: str | None = None
    charger_id: str | None = None
    connector_id: str | None = None
    description: str | None = None
    priority: str = "normal"
    assignee: str | None = None
    window_id: str | None = None
    inspection_id: str | None = None
    created_by: str | None = None
    updated_at: float | None = None
    started_at: float | None = None
    resolved_at: float | None = None
    cancelled_at: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> WorkOrder:
        data = dict(zip(COLUMNS, row, strict=True))
        data["source"] = data["source"] or ("rule" if data["rule"] else "manual")
        data["priority"] = data["priority"] or "normal"
        return cls(**data)


def _event_id() -> str:
    # Sorts by time of insertion, then at random among events of one nanosecond.
    return f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"


class WorkOrderStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def _sqlite_columns(self) -> set[str]:
        return {str(r[1]) for r in await self._db.fetchall("PRAGMA table_info(work_orders)")}

    async def create_schema(self) -> None:
        await self._db.execute(BASE_SCHEMA)
        if isinstance(self._db, SQLiteDatabase):
            for name, kind in EXTRA_COLUMNS:
                if name in await self._sqlite_columns():
                    continue
                try:
                    await self._db.execute(f"ALTER TABLE work_orders ADD COLUMN {name} {kind}")
                except DatabaseError:
                    # The API and the rules engine of one process both create this schema:
                    # the other may have added the column since we looked.
                    if name not in await self._sqlite_columns():
                        raise
        else:
            for name, kind in EXTRA_COLUMNS:
                await self._db.execute(
                    f"ALTER TABLE work_orders ADD COLUMN IF NOT EXISTS {name} {kind}"
                )
        await self._db.execute(EVENTS_SCHEMA)
        for statement in INDEXES:
            await self._db.execute(statement)

    async def create(
        self,
        title: str,
        *,
        actor: str,
        source: str = "manual",
        description: str | None = None,
        charger_id: str | None = None,
        connector_id: str | None = None,
        alert_id: str | None = None,
        rule: str | None = None,
        priority: str = "normal",
        assignee: str | None = None,
        window_id: str | None = None,
        inspection_id: str | None = None,
        now: float | None = None,
        order_id: str | None = None,
    ) -> WorkOrder | None:
        """A new open work order; None when one for ``alert_id`` (or with ``order_id``,
        which makes creating it idempotent) exists already."""
        now = time.time() if now is None else now
        order_id = order_id or uuid.uuid4().hex
        values = {
            "id": order_id, "alert_id": alert_id, "rule": rule, "charger_id": charger_id,
            "connector_id": connector_id, "title": title, "description": description,
            "status": "open", "created_at": now, "source": source, "priority": priority,
            "assignee": assignee, "window_id": window_id, "inspection_id": inspection_id,
            "created_by": actor, "updated_at": now,
        }  # fmt: skip
        names = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        async with self._db.transaction() as tx:
            inserted = await tx.execute(
                f"INSERT INTO work_orders ({names}) VALUES ({marks}) ON CONFLICT DO NOTHING",
                tuple(values.values()),
            )
            if inserted != 1:
                return None
            created = {k: v for k, v in values.items() if v is not None and k != "id"}
            await _event(tx, order_id, now, actor, "created", created)
        return await self.get(order_id)

    async def get(self, order_id: str, *, with_history: bool = False) -> WorkOrder:
        row = await self._db.fetchone(_SELECT + " WHERE id = ?", (order_id,))
        if row is None:
            raise WorkOrderNotFound(f"no work order {order_id!r}")
        order = WorkOrder.from_row(row)
        if with_history:
            order.history.extend(await self.history(order_id))
        return order

    async def history(self, order_id: str) -> builtins.list[dict[str, Any]]:
        rows = await self._db.fetchall(
            "SELECT at, actor, kind, data FROM work_order_events WHERE work_order_id = ?"
            " ORDER BY id",
            (order_id,),
        )
        return [
            {"at": float(at), "actor": actor, "kind": kind, **json.loads(data)}
            for at, actor, kind, data in rows
        ]

    async def list(
        self,
        *,
        statuses: Sequence[str] = (),
        charger_ids: Sequence[str] | None = None,
        source: str | None = None,
        alert_id: str | None = None,
        window_id: str | None = None,
        assignee: str | None = None,
        created_from: float | None = None,
        created_to: float | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[builtins.list[WorkOrder], int]:
        """Newest first, and the count of all that match."""
        where: builtins.list[str] = []
        params: builtins.list[Any] = []
        if statuses:
            where.append(f"status IN ({', '.join('?' for _ in statuses)})")
            params.extend(statuses)
        if charger_ids is not None:
            if not charger_ids:
                return [], 0
            where.append(f"charger_id IN ({', '.join('?' for _ in charger_ids)})")
            params.extend(charger_ids)
        if source == "rule":
            where.append("(source = 'rule' OR (source IS NULL AND rule IS NOT NULL))")
        elif source == "manual":
            where.append("(source = 'manual' OR (source IS NULL AND rule IS NULL))")
        elif source is not None:
            where.append("source = ?")
            params.append(source)
        for column, value in (("alert_id", alert_id), ("window_id", window_id),
                              ("assignee", assignee)):  # fmt: skip
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if created_from is not None:
            where.append("created_at >= ?")
            params.append(created_from)
        if created_to is not None:
            where.append("created_at < ?")
            params.append(created_to)
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        count = await self._db.fetchone("SELECT COUNT(*) FROM work_orders" + clause, params)
        rows = await self._db.fetchall(
            _SELECT + clause + " ORDER BY created_at DESC, id LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        return [WorkOrder.from_row(r) for r in rows], int(count[0]) if count else 0

    async def update(
        self,
        order_id: str,
        changes: Mapping[str, Any],
        *,
        actor: str,
        note: str | None = None,
        now: float | None = None,
    ) -> WorkOrder:
        """Apply ``changes`` (status, title, description, priority, assignee, window_id,
        connector_id) and a note, recording each in the history in one transaction."""
        now = time.time() if now is None else now
        async with self._db.transaction() as tx:
            rows = await tx.fetchall(_SELECT + " WHERE id = ?", (order_id,))
            if not rows:
                raise WorkOrderNotFound(f"no work order {order_id!r}")
            current = WorkOrder.from_row(rows[0])
            sets: dict[str, Any] = {}
            for name, value in changes.items():
                if getattr(current, name) != value:
                    sets[name] = value
            status = sets.get("status")
            if status is not None:
                if status not in TRANSITIONS[current.status]:
                    allowed = ", ".join(sorted(TRANSITIONS[current.status])) or "none"
                    raise InvalidTransition(
                        f"a work order that is {current.status} cannot become {status}"
                        f" (allowed: {allowed})"
                    )
                stamp = {"in_progress": "started_at", "resolved": "resolved_at",
                         "cancelled": "cancelled_at"}.get(status)  # fmt: skip
                if stamp is not None:
                    sets[stamp] = now
                if status == "open":
                    sets.update(resolved_at=None, cancelled_at=None)
            if sets:
                sets["updated_at"] = now
                assignments = ", ".join(f"{name} = ?" for name in sets)
                await tx.execute(
                    f"UPDATE work_orders SET {assignments} WHERE id = ?",
                    (*sets.values(), order_id),
                )
                for name, value in changes.items():
                    if name in sets:
                        before = getattr(current, name)
                        kind = "status" if name == "status" else "changed"
                        await _event(
                            tx, order_id, now, actor, kind,
                            {"field": name, "from": before, "to": value},
                        )  # fmt: skip
            if note:
                await _event(tx, order_id, now, actor, "note", {"note": note})
                if not sets:
                    await tx.execute(
                        "UPDATE work_orders SET updated_at = ? WHERE id = ?", (now, order_id)
                    )
        return await self.get(order_id, with_history=True)


async def _event(
    tx: Transaction, order_id: str, at: float, actor: str, kind: str, data: dict[str, Any]
) -> None:
    await tx.execute(
        "INSERT INTO work_order_events (id, work_order_id, at, actor, kind, data)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (_event_id(), order_id, at, actor, kind, json.dumps(data)),
    )
