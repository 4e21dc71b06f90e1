"""Maintenance windows: when a charger (or every charger of a site) is out for maintenance.

A window is one-off (``startsAt``..``endsAt``) or recurring (a cron expression, a duration
and a time zone; ``startsAt``/``endsAt`` then bound the recurrence). What happens at the
edges is :mod:`fleet.maintenance`'s job; this module stores windows, computes their
occurrences (pure, from APScheduler's cron trigger) and keeps the persisted state of the
windows in progress, so a restart mid-window continues where it was.

Tables: ``maintenance_windows`` (definitions), ``maintenance_runs`` (one row per window,
charger and occurrence once it started: ``starting`` while the scheduler that claimed the
start takes the charger out, then ``active``, then ``done``) and ``maintenance_holds``
(per charger held out: the availability to restore).
"""

from __future__ import annotations

import builtins
import json
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger

from chargetwin.database import Database
from fleet.uptime import Interval

MAX_OCCURRENCES = 100_000

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS maintenance_windows (
        id TEXT PRIMARY KEY, charger_id TEXT, site TEXT, title TEXT NOT NULL,
        description TEXT, starts_at DOUBLE PRECISION, ends_at DOUBLE PRECISION, cron TEXT,
        duration_s DOUBLE PRECISION, timezone TEXT, created_by TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL, cancelled_at DOUBLE PRECISION)""",
    """CREATE TABLE IF NOT EXISTS maintenance_runs (
        window_id TEXT NOT NULL, charger_id TEXT NOT NULL, starts_at DOUBLE PRECISION NOT NULL,
        ends_at DOUBLE PRECISION NOT NULL, state TEXT NOT NULL,
        started_at DOUBLE PRECISION NOT NULL, ended_at DOUBLE PRECISION,
        PRIMARY KEY (window_id, charger_id, starts_at))""",
    """CREATE TABLE IF NOT EXISTS maintenance_holds (
        charger_id TEXT PRIMARY KEY, previous TEXT NOT NULL,
        held_since DOUBLE PRECISION NOT NULL)""",
)

_WINDOW_COLUMNS = (
    "id", "charger_id", "site", "title", "description", "starts_at", "ends_at", "cron",
    "duration_s", "timezone", "created_by", "created_at", "cancelled_at",
)  # fmt: skip
_SELECT = f"SELECT {', '.join(_WINDOW_COLUMNS)} FROM maintenance_windows"
_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


class WindowNotFound(Exception):
    pass


def cron_trigger(expression: str, timezone: str) -> CronTrigger:
    """A standard 5-field cron expression as an APScheduler trigger; ValueError if invalid.

    APScheduler 3 numbers weekdays from Monday (0 = mon); cron from Sunday (0 and 7 = sun).
    Numeric weekdays are turned into names so ``0 2 * * 0`` means Sundays, as in crontab.
    """
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"invalid cron expression {expression!r}: five fields expected")
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {timezone!r}") from exc
    minute, hour, day, month, weekday = fields
    try:
        return CronTrigger(
            minute=minute,
            hour=hour,
            day=day,
            month=month,
            day_of_week=_weekdays(weekday),
            timezone=zone,
        )
    except ValueError as exc:
        raise ValueError(f"invalid cron expression {expression!r}: {exc}") from exc


def _weekdays(field: str) -> str:
    if field in ("*", "?"):
        return "*"
    days: set[int] = set()
    for item in field.lower().split(","):
        base, _, step_text = item.partition("/")
        step = int(step_text) if step_text.isdigit() and int(step_text) > 0 else None
        if step_text and step is None:
            raise ValueError(f"invalid weekday step in {field!r}")
        if base == "*":
            low, high = 0, 6
        elif re.fullmatch(r"\d-\d", base):
            low, high = int(base[0]), int(base[2])
        elif re.fullmatch(r"\d", base):
            low = high = int(base)
        elif base in _DAY_NAMES:
            low = high = _DAY_NAMES.index(base)
        else:
            raise ValueError(f"invalid weekday {item!r}")
        if low > high or high > 7:
            raise ValueError(f"invalid weekday range {item!r}")
        days.update(d % 7 for d in range(low, high + 1, step or 1))
    return ",".join(_DAY_NAMES[d] for d in sorted(days))


@dataclass(frozen=True, slots=True)
class Window:
    id: str
    charger_id: str | None
    site: str | None
    title: str
    description: str | None
    starts_at: float | None
    ends_at: float | None
    cron: str | None
    duration_s: float | None
    timezone: str | None
    created_by: str
    created_at: float
    cancelled_at: float | None = None

    @property
    def recurring(self) -> bool:
        return self.cron is not None

    def occurrences(self, start: float, end: float) -> list[Interval]:
        """The occurrences overlapping ``[start, end)``, oldest first, cut at cancellation."""
        stop = end if self.cancelled_at is None else min(end, self.cancelled_at)
        out: list[Interval] = []
        if not self.recurring:
            assert self.starts_at is not None and self.ends_at is not None
            if self.starts_at < stop and self.ends_at > start:
                out.append(Interval(self.starts_at, self.ends_at))
        else:
            assert self.cron is not None and self.duration_s is not None
            trigger = cron_trigger(self.cron, self.timezone or "UTC")
            lower = max(start - self.duration_s, self.starts_at or start - self.duration_s)
            cursor = datetime.fromtimestamp(lower, UTC)
            previous = None
            while len(out) < MAX_OCCURRENCES:
                fire = trigger.get_next_fire_time(previous, cursor)
                if fire is None:
                    break
                begin = fire.timestamp()
                if begin >= stop or (self.ends_at is not None and begin >= self.ends_at):
                    break
                finish = begin + self.duration_s
                if self.ends_at is not None:
                    finish = min(finish, self.ends_at)
                if finish > start:
                    out.append(Interval(begin, finish))
                previous, cursor = fire, fire + timedelta(seconds=1)
        if self.cancelled_at is not None:
            out = [Interval(i.start, min(i.end, self.cancelled_at)) for i in out]
        return [i for i in out if i.end > i.start]

    def next_edge(self, now: float) -> float | None:
        """The next start or end of an occurrence after ``now`` (for the scheduler's sleep)."""
        horizon = now + 2 * 86400
        edges = [
            edge
            for occurrence in self.occurrences(now, horizon)
            for edge in (occurrence.start, occurrence.end)
            if edge > now
        ]
        return min(edges) if edges else None

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _WINDOW_COLUMNS}


@dataclass(frozen=True, slots=True)
class Run:
    window_id: str
    charger_id: str
    starts_at: float
    ends_at: float
    state: str
    started_at: float
    ended_at: float | None


class WindowStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_schema(self) -> None:
        for statement in SCHEMA:
            await self._db.execute(statement)

    # --- definitions --------------------------------------------------------------------
    async def create(
        self,
        *,
        title: str,
        created_by: str,
        charger_id: str | None = None,
        site: str | None = None,
        description: str | None = None,
        starts_at: float | None = None,
        ends_at: float | None = None,
        cron: str | None = None,
        duration_s: float | None = None,
        timezone: str | None = None,
        now: float | None = None,
    ) -> Window:
        window = Window(
            id=uuid.uuid4().hex, charger_id=charger_id, site=site, title=title,
            description=description, starts_at=starts_at, ends_at=ends_at, cron=cron,
            duration_s=duration_s, timezone=timezone, created_by=created_by,
            created_at=time.time() if now is None else now,
        )  # fmt: skip
        values = window.as_dict()
        await self._db.execute(
            f"INSERT INTO maintenance_windows ({', '.join(values)})"
            f" VALUES ({', '.join('?' for _ in values)})",
            tuple(values.values()),
        )
        return window

    async def get(self, window_id: str) -> Window:
        row = await self._db.fetchone(_SELECT + " WHERE id = ?", (window_id,))
        if row is None:
            raise WindowNotFound(f"no maintenance window {window_id!r}")
        return Window(*row)

    async def list(
        self,
        *,
        charger_ids: Sequence[str] | None = None,
        sites: Sequence[str] | None = None,
        include_cancelled: bool = True,
    ) -> builtins.list[Window]:
        """Windows aimed at one of ``charger_ids`` or ``sites`` (all when both None)."""
        where: builtins.list[str] = []
        params: builtins.list[Any] = []
        targets: builtins.list[str] = []
        if charger_ids:
            targets.append(f"charger_id IN ({', '.join('?' for _ in charger_ids)})")
            params.extend(charger_ids)
        if sites:
            targets.append(f"site IN ({', '.join('?' for _ in sites)})")
            params.extend(sites)
        if charger_ids is not None or sites is not None:
            if not targets:
                return []
            where.append("(" + " OR ".join(targets) + ")")
        if not include_cancelled:
            where.append("cancelled_at IS NULL")
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        rows = await self._db.fetchall(_SELECT + clause + " ORDER BY created_at", params)
        return [Window(*row) for row in rows]

    async def cancel(self, window_id: str, now: float | None = None) -> Window:
        await self.get(window_id)
        await self._db.execute(
            "UPDATE maintenance_windows SET cancelled_at = ? WHERE id = ? AND cancelled_at IS NULL",
            (time.time() if now is None else now, window_id),
        )
        return await self.get(window_id)

    # --- runs and holds -----------------------------------------------------------------
    async def runs(
        self, *, state: str | None = None, charger_id: str | None = None
    ) -> builtins.list[Run]:
        where, params = [], []
        if state is not None:
            where.append("state = ?")
            params.append(state)
        if charger_id is not None:
            where.append("charger_id = ?")
            params.append(charger_id)
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        rows = await self._db.fetchall(
            "SELECT window_id, charger_id, starts_at, ends_at, state, started_at, ended_at"
            " FROM maintenance_runs" + clause + " ORDER BY started_at",
            params,
        )
        return [Run(*row) for row in rows]

    async def has_run(self, window_id: str, charger_id: str, starts_at: float) -> bool:
        row = await self._db.fetchone(
            "SELECT 1 FROM maintenance_runs WHERE window_id = ? AND charger_id = ?"
            " AND starts_at = ?",
            (window_id, charger_id, starts_at),
        )
        return row is not None

    async def add_run(
        self, window_id: str, charger_id: str, occurrence: Interval, now: float
    ) -> None:
        await self._db.execute(
            "INSERT INTO maintenance_runs (window_id, charger_id, starts_at, ends_at, state,"
            " started_at) VALUES (?, ?, ?, ?, 'active', ?) ON CONFLICT DO NOTHING",
            (window_id, charger_id, occurrence.start, occurrence.end, now),
        )

    async def claim_run(
        self, window_id: str, charger_id: str, occurrence: Interval, now: float, stale_after: float
    ) -> bool:
        """Claim the start of an occurrence (a ``starting`` run stamped ``now``): True for
        the one scheduler that gets it. A ``starting`` claim older than ``stale_after``
        (its scheduler died before it finished) is taken over."""
        key = (window_id, charger_id, occurrence.start)
        inserted = await self._db.execute(
            "INSERT INTO maintenance_runs (window_id, charger_id, starts_at, ends_at, state,"
            " started_at) VALUES (?, ?, ?, ?, 'starting', ?) ON CONFLICT DO NOTHING",
            (window_id, charger_id, occurrence.start, occurrence.end, now),
        )
        if inserted == 1:
            return True
        taken = await self._db.execute(
            "UPDATE maintenance_runs SET started_at = ? WHERE window_id = ? AND charger_id = ?"
            " AND starts_at = ? AND state = 'starting' AND started_at < ?",
            (now, *key, now - stale_after),
        )
        return taken == 1

    async def activate_run(
        self, window_id: str, charger_id: str, starts_at: float, claimed_at: float
    ) -> bool:
        """The claimed start is done: ``starting`` -> ``active`` (if the claim is still ours)."""
        changed = await self._db.execute(
            "UPDATE maintenance_runs SET state = 'active' WHERE window_id = ? AND charger_id = ?"
            " AND starts_at = ? AND state = 'starting' AND started_at = ?",
            (window_id, charger_id, starts_at, claimed_at),
        )
        return changed == 1

    async def drop_claim(
        self, window_id: str, charger_id: str, starts_at: float, claimed_at: float
    ) -> None:
        """Give a claimed start up (the charger could not be taken out): tried next tick."""
        await self._db.execute(
            "DELETE FROM maintenance_runs WHERE window_id = ? AND charger_id = ? AND starts_at = ?"
            " AND state = 'starting' AND started_at = ?",
            (window_id, charger_id, starts_at, claimed_at),
        )

    async def held_by_run(self, charger_id: str) -> bool:
        """Whether a run keeps the charger out now (``active``, or ``starting``)."""
        row = await self._db.fetchone(
            "SELECT 1 FROM maintenance_runs WHERE charger_id = ? AND state IN"
            " ('active', 'starting')",
            (charger_id,),
        )
        return row is not None

    async def finish_run(self, run: Run, now: float) -> bool:
        """End the run if it is still as read (compare-and-set on its state and stamp)."""
        changed = await self._db.execute(
            "UPDATE maintenance_runs SET state = 'done', ended_at = ? WHERE window_id = ?"
            " AND charger_id = ? AND starts_at = ? AND state = ? AND started_at = ?",
            (now, run.window_id, run.charger_id, run.starts_at, run.state, run.started_at),
        )
        return changed == 1

    async def hold(self, charger_id: str) -> dict[str, Any] | None:
        row = await self._db.fetchone(
            "SELECT previous FROM maintenance_holds WHERE charger_id = ?", (charger_id,)
        )
        return None if row is None else dict(json.loads(row[0]))

    async def holds(self) -> dict[str, dict[str, Any]]:
        rows = await self._db.fetchall("SELECT charger_id, previous FROM maintenance_holds")
        return {str(r[0]): dict(json.loads(r[1])) for r in rows}

    async def put_hold(self, charger_id: str, previous: dict[str, Any], now: float) -> None:
        await self._db.execute(
            "INSERT INTO maintenance_holds (charger_id, previous, held_since) VALUES (?, ?, ?)"
            " ON CONFLICT (charger_id) DO NOTHING",
            (charger_id, json.dumps(previous), now),
        )

    async def release_hold(self, charger_id: str) -> bool:
        """Drop the charger's hold unless a run keeps it out again (a window that started
        since the hold was read keeps it, with the value saved before the first one)."""
        changed = await self._db.execute(
            "DELETE FROM maintenance_holds WHERE charger_id = ? AND NOT EXISTS (SELECT 1 FROM"
            " maintenance_runs WHERE charger_id = ? AND state IN ('active', 'starting'))",
            (charger_id, charger_id),
        )
        return changed == 1
