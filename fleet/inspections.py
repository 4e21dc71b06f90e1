"""Scheduled inspections: a cron schedule per charger or site that opens work orders.

Each time the schedule comes due the maintenance scheduler opens one work order per
targeted charger (source ``inspection``) and records the run, so an inspection missed
while no ``fleet`` process led is opened once when one leads again (runs are coalesced,
not replayed).
"""

from __future__ import annotations

import builtins
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from chargetwin.database import Database
from fleet.windows import cron_trigger

SCHEMA = """CREATE TABLE IF NOT EXISTS inspections (
    id TEXT PRIMARY KEY, charger_id TEXT, site TEXT, title TEXT NOT NULL, description TEXT,
    cron TEXT NOT NULL, timezone TEXT NOT NULL, created_by TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL, last_run_at DOUBLE PRECISION,
    cancelled_at DOUBLE PRECISION)"""

_COLUMNS = (
    "id", "charger_id", "site", "title", "description", "cron", "timezone", "created_by",
    "created_at", "last_run_at", "cancelled_at",
)  # fmt: skip
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM inspections"


class InspectionNotFound(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Inspection:
    id: str
    charger_id: str | None
    site: str | None
    title: str
    description: str | None
    cron: str
    timezone: str
    created_by: str
    created_at: float
    last_run_at: float | None = None
    cancelled_at: float | None = None

    def next_due(self, after: float | None = None) -> float | None:
        """The first scheduled time after the last run (or creation), or ``after``."""
        since = after if after is not None else (self.last_run_at or self.created_at)
        trigger = cron_trigger(self.cron, self.timezone)
        fire = trigger.get_next_fire_time(None, datetime.fromtimestamp(since + 1e-6, UTC))
        return None if fire is None else fire.timestamp()

    def due(self, now: float) -> bool:
        if self.cancelled_at is not None:
            return False
        moment = self.next_due()
        return moment is not None and moment <= now

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _COLUMNS}


class InspectionStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_schema(self) -> None:
        await self._db.execute(SCHEMA)

    async def create(
        self,
        *,
        title: str,
        cron: str,
        timezone: str,
        created_by: str,
        charger_id: str | None = None,
        site: str | None = None,
        description: str | None = None,
        now: float | None = None,
    ) -> Inspection:
        cron_trigger(cron, timezone)  # validates
        inspection = Inspection(
            id=uuid.uuid4().hex, charger_id=charger_id, site=site, title=title,
            description=description, cron=cron, timezone=timezone, created_by=created_by,
            created_at=time.time() if now is None else now,
        )  # fmt: skip
        values = inspection.as_dict()
        await self._db.execute(
            f"INSERT INTO inspections ({', '.join(values)})"
            f" VALUES ({', '.join('?' for _ in values)})",
            tuple(values.values()),
        )
        return inspection

    async def get(self, inspection_id: str) -> Inspection:
        row = await self._db.fetchone(_SELECT + " WHERE id = ?", (inspection_id,))
        if row is None:
            raise InspectionNotFound(f"no inspection {inspection_id!r}")
        return Inspection(*row)

    async def list(self, *, include_cancelled: bool = True) -> builtins.list[Inspection]:
        clause = "" if include_cancelled else " WHERE cancelled_at IS NULL"
        rows = await self._db.fetchall(_SELECT + clause + " ORDER BY created_at")
        return [Inspection(*row) for row in rows]

    async def mark_run(self, inspection_id: str, now: float, *, seen: float | None) -> bool:
        """Record a run at ``now`` if the last run is still ``seen`` (compare-and-set: of
        two schedulers that read the same inspection, one records the run)."""
        if seen is None:
            changed = await self._db.execute(
                "UPDATE inspections SET last_run_at = ? WHERE id = ? AND last_run_at IS NULL",
                (now, inspection_id),
            )
        else:
            changed = await self._db.execute(
                "UPDATE inspections SET last_run_at = ? WHERE id = ? AND last_run_at = ?",
                (now, inspection_id, seen),
            )
        return changed == 1

    async def cancel(self, inspection_id: str, now: float | None = None) -> Inspection:
        await self.get(inspection_id)
        await self._db.execute(
            "UPDATE inspections SET cancelled_at = ? WHERE id = ? AND cancelled_at IS NULL",
            (time.time() if now is None else now, inspection_id),
        )
        return await self.get(inspection_id)
