"""Outages of every port, read from the status history in the time-series store, and the
exclusions that do not count against the operator: the inputs of :mod:`fleet.uptime`.

A port is EV-ChART's *port*: an OCPP connector (id 1 and up) of a charger, named
``{charger}/{connector}``. It is out (23 CFR 680.116(b): not "online and available for
use, or in use") while its status is ``Faulted`` or ``Unavailable``, while connector 0
(the whole charger) is ``Faulted`` or ``Unavailable``, and while the charger is offline
(presence). Time before anything is known about a port does not count as outage.

Exclusions come from maintenance windows (scheduled maintenance, each occurrence) and
from ``outage_exclusions`` rows that operators record with a reason of
:data:`fleet.uptime.EXCLUSION_REASONS` (utility interruption, vandalism, ...).
"""

from __future__ import annotations

import builtins
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from chargetwin.database import Database
from fleet.uptime import Cause, Exclusion, PortUptime, out_of_service, port_uptime
from fleet.windows import WindowStore
from rules.points import NS, Selection
from rules.series import SeriesStore
from twin.registry import ChargerRegistry

OUT_STATUSES = frozenset({"Faulted", "Unavailable"})
OFFLINE = frozenset({"offline"})

EXCLUSIONS_SCHEMA = """CREATE TABLE IF NOT EXISTS outage_exclusions (
    id TEXT PRIMARY KEY, charger_id TEXT NOT NULL, connector_id TEXT,
    starts_at DOUBLE PRECISION NOT NULL, ends_at DOUBLE PRECISION NOT NULL,
    reason TEXT NOT NULL, note TEXT, created_by TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL)"""

_EXCLUSION_COLUMNS = (
    "id", "charger_id", "connector_id", "starts_at", "ends_at", "reason", "note",
    "created_by", "created_at",
)  # fmt: skip


def port_id(charger_id: str, connector: str | int) -> str:
    return f"{charger_id}/{connector}"


class ExclusionStore:
    """Operator-recorded outage exclusions (grid outage, vandalism, natural disaster...)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_schema(self) -> None:
        await self._db.execute(EXCLUSIONS_SCHEMA)

    async def create(self, **values: Any) -> dict[str, Any]:
        row = {"id": uuid.uuid4().hex, "created_at": time.time(), **values}
        row = {k: row.get(k) for k in _EXCLUSION_COLUMNS}
        await self._db.execute(
            f"INSERT INTO outage_exclusions ({', '.join(row)})"
            f" VALUES ({', '.join('?' for _ in row)})",
            tuple(row.values()),
        )
        return row

    async def list(
        self, charger_ids: Sequence[str] | None = None, start: float = 0, end: float = 1e12
    ) -> builtins.list[dict[str, Any]]:
        sql = f"SELECT {', '.join(_EXCLUSION_COLUMNS)} FROM outage_exclusions"
        sql += " WHERE starts_at < ? AND ends_at > ?"
        params: builtins.list[Any] = [end, start]
        if charger_ids is not None:
            if not charger_ids:
                return []
            sql += f" AND charger_id IN ({', '.join('?' for _ in charger_ids)})"
            params.extend(charger_ids)
        rows = await self._db.fetchall(sql + " ORDER BY starts_at", params)
        return [dict(zip(_EXCLUSION_COLUMNS, r, strict=True)) for r in rows]

    async def delete(self, exclusion_id: str) -> bool:
        return (
            await self._db.execute("DELETE FROM outage_exclusions WHERE id = ?", (exclusion_id,))
            == 1
        )


@dataclass(frozen=True, slots=True)
class History:
    """Status changes per (charger, connector) and presence changes per charger."""

    status: dict[tuple[str, str], list[tuple[float, str]]]
    status_before: dict[tuple[str, str], str]
    presence: dict[str, list[tuple[float, str]]]
    presence_before: dict[str, str]


async def read_history(
    store: SeriesStore, charger_ids: Sequence[str] | None, start: float, end: float
) -> History:
    """Every status and presence change in ``[start, end)`` and the state held at ``start``."""
    filters = {"charger": tuple(charger_ids)} if charger_ids is not None else {}
    status_sel = Selection("connector_status", "status", filters, ("charger", "connector"))
    presence_sel = Selection("presence", "state", filters, ("charger",))
    lo, hi = int(start * NS), int(end * NS)
    status: dict[tuple[str, str], list[tuple[float, str]]] = defaultdict(list)
    status_before: dict[tuple[str, str], str] = {}
    for sample in await store.last(status_sel, None, lo):
        labels = dict(sample.labels)
        status_before[(labels["charger"], labels["connector"])] = str(sample.value)
    for labels_t, points in (await store.points(status_sel, lo, hi)).items():
        labels = dict(labels_t)
        key = (labels["charger"], labels["connector"])
        status[key].extend((t / NS, str(v)) for t, v in points)
    presence: dict[str, list[tuple[float, str]]] = defaultdict(list)
    presence_before: dict[str, str] = {}
    for sample in await store.last(presence_sel, None, lo):
        presence_before[dict(sample.labels)["charger"]] = str(sample.value)
    for labels_t, points in (await store.points(presence_sel, lo, hi)).items():
        presence[dict(labels_t)["charger"]].extend((t / NS, str(v)) for t, v in points)
    return History(dict(status), status_before, dict(presence), presence_before)


def port_outages(history: History, start: float, end: float) -> dict[str, list[Cause]]:
    """Outage causes per port (``charger/connector``, connectors 1 and up)."""
    chargers = {c for c, _ in (*history.status, *history.status_before)}
    out: dict[str, list[Cause]] = {}
    for charger in sorted(chargers):
        wide: list[Cause] = out_of_service(
            history.presence.get(charger, []),
            history.presence_before.get(charger),
            start, end, OFFLINE, cause="Offline",
        )  # fmt: skip
        key0 = (charger, "0")
        wide += out_of_service(
            history.status.get(key0, []), history.status_before.get(key0), start, end,
            OUT_STATUSES,
        )  # fmt: skip
        connectors = {
            k for c, k in (*history.status, *history.status_before) if c == charger and k != "0"
        }
        for connector in sorted(connectors, key=lambda k: (len(k), k)):
            key = (charger, connector)
            own = out_of_service(
                history.status.get(key, []), history.status_before.get(key), start, end,
                OUT_STATUSES,
            )  # fmt: skip
            out[port_id(charger, connector)] = own + wide
    return out


async def exclusions_for(
    db: Database,
    registry: ChargerRegistry,
    charger_ids: Sequence[str] | None,
    start: float,
    end: float,
) -> dict[str, list[Exclusion]]:
    """Exclusions per charger (``"{charger}"``) or per port (``"{charger}/{connector}"``)."""
    sites: dict[str, list[str]] = defaultdict(list)
    for registered in await registry.list():
        if registered.site:
            sites[registered.site].append(registered.charger_id)
    wanted = set(charger_ids) if charger_ids is not None else None
    out: dict[str, list[Exclusion]] = defaultdict(list)
    for window in await WindowStore(db).list():
        targets = [window.charger_id] if window.charger_id else sites.get(window.site or "", [])
        targets = [t for t in targets if wanted is None or t in wanted]
        if not targets:
            continue
        for occurrence in window.occurrences(start, end):
            for charger in targets:
                out[charger].append(
                    Exclusion(occurrence.start, occurrence.end, "scheduled_maintenance",
                              f"window:{window.id}")
                )  # fmt: skip
    for row in await ExclusionStore(db).list(charger_ids, start, end):
        key = (
            row["charger_id"]
            if row["connector_id"] is None
            else port_id(row["charger_id"], row["connector_id"])
        )
        out[key].append(
            Exclusion(row["starts_at"], row["ends_at"], row["reason"], f"exclusion:{row['id']}")
        )
    return dict(out)


async def uptimes(
    store: SeriesStore,
    db: Database,
    registry: ChargerRegistry,
    charger_ids: Sequence[str] | None,
    start: float,
    end: float,
) -> list[PortUptime]:
    """μ of every port of ``charger_ids`` (all when None) over ``[start, end)``."""
    history = await read_history(store, charger_ids, start, end)
    exclusions = await exclusions_for(db, registry, charger_ids, start, end)
    out = []
    for port, causes in port_outages(history, start, end).items():
        charger = port.rsplit("/", 1)[0]
        mine = exclusions.get(charger, []) + exclusions.get(port, [])
        out.append(port_uptime(port, causes, mine, start, end))
    return out
