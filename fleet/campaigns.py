"""Firmware campaigns: staged rollouts of one catalog image, kept in the shared database.

A campaign splits its chargers into phases (a canary, then waves), asks each charger for the
image by setting ``desired.firmware.version`` in its shadow (MQTT, through the twin), and
follows it through the shadow store until the reported version is the desired one. Every
decision rests on rows in ``campaigns`` / ``campaign_chargers`` and on the shadows, so the
leading ``fleet`` process picks the campaign up after a restart or a change of leader.

Every write the engine makes is a compare-and-set on what it read, so two engines racing
(a leader that lost its lock and does not know it yet, next to the new one) never take a
step twice: each row carries a ``revision`` that every write bumps, a charger transition
applies only while the row is still at the state *and* revision read (a charger that went
``scheduled -> queued -> scheduled`` meanwhile is not the one read), and the engine's
starts apply only while the campaign itself is still at the state and revision read (an
operator's pause or cancel in between wins). Only the engine whose compare-and-set won
publishes the desired firmware.

Per charger: ``queued -> scheduled -> downloading -> downloaded -> installing -> installed``,
or ``failed`` (retries spent), ``skipped`` (does not fit, already there, gone) or
``cancelled``. The engine that moves them is :mod:`fleet.rollouts`.

``campaign_claims`` holds one row per charger in an active campaign (primary key on the
charger), so two campaigns can never both own a charger, even when created at once on two
API instances.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import math
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from apscheduler.triggers.cron import CronTrigger

from chargetwin.database import Database, DatabaseError, SQLiteDatabase

SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS campaigns (
        campaign_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        image_id TEXT NOT NULL,
        vendor TEXT NOT NULL,
        model TEXT NOT NULL,
        version TEXT NOT NULL,
        target TEXT NOT NULL,
        policy TEXT NOT NULL,
        phases TEXT NOT NULL,
        state TEXT NOT NULL,
        phase INTEGER NOT NULL,
        reason TEXT,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        revision INTEGER NOT NULL DEFAULT 0
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS campaign_chargers (
        campaign_id TEXT NOT NULL,
        charger_id TEXT NOT NULL,
        phase INTEGER NOT NULL,
        state TEXT NOT NULL,
        reason TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        desired_set BOOLEAN NOT NULL DEFAULT FALSE,
        started_at DOUBLE PRECISION,
        updated_at DOUBLE PRECISION NOT NULL,
        revision INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (campaign_id, charger_id)
    )
    """,
    "CREATE INDEX IF NOT EXISTS campaign_chargers_state ON campaign_chargers (campaign_id, state)",
    """
    CREATE TABLE IF NOT EXISTS campaign_claims (
        charger_id TEXT PRIMARY KEY,
        campaign_id TEXT NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS campaign_claims_campaign ON campaign_claims (campaign_id)",
)

# Campaign states. "draft" only exists while a creation checks its claims.
DRAFT, RUNNING, PAUSED, COMPLETED, CANCELLED = (
    "draft",
    "running",
    "paused",
    "completed",
    "cancelled",
)
ACTIVE = (RUNNING, PAUSED)
CAMPAIGN_STATES = (RUNNING, PAUSED, COMPLETED, CANCELLED)

# Charger states.
QUEUED, SCHEDULED, DOWNLOADING, DOWNLOADED, INSTALLING = (
    "queued",
    "scheduled",
    "downloading",
    "downloaded",
    "installing",
)
INSTALLED, FAILED, SKIPPED = "installed", "failed", "skipped"
IN_FLIGHT = (SCHEDULED, DOWNLOADING, DOWNLOADED, INSTALLING)
TERMINAL = (INSTALLED, FAILED, SKIPPED, CANCELLED)
CHARGER_STATES = (QUEUED, *IN_FLIGHT, *TERMINAL)
EXCLUDED_PHASE = -1  # chargers skipped at creation belong to no phase

# Added after the first release: databases created before get them on start-up.
_REVISION_COLUMNS = ("campaigns", "campaign_chargers")

_CHUNK = 500
_CAMPAIGN_COLUMNS = (
    "campaign_id, name, image_id, vendor, model, version, target, policy, phases, state,"
    " phase, reason, created_at, updated_at"
)
_CAMPAIGN_SELECT = f"{_CAMPAIGN_COLUMNS}, revision"


class CampaignError(Exception):
    """Base of the campaign store's refusals."""


class CampaignNotFoundError(CampaignError):
    """No campaign with this id."""


class CampaignConflictError(CampaignError):
    """Chargers of the new campaign are already in an active one (``conflicts``: id -> id)."""

    def __init__(self, conflicts: dict[str, str]) -> None:
        campaigns = sorted(set(conflicts.values()))
        super().__init__(
            f"{len(conflicts)} charger(s) are already in active campaign(s) "
            f"{', '.join(campaigns)}: {', '.join(sorted(conflicts)[:20])}"
        )
        self.conflicts = conflicts


class CampaignStateError(CampaignError):
    """The action does not apply to the campaign in its current state."""


# --- policy -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Window:
    """Maintenance windows: each starts at a cron time (``timezone``) and lasts ``duration_s``."""

    cron: str
    timezone: str = "UTC"
    duration_s: float = 3600.0

    def trigger(self) -> CronTrigger:
        """APScheduler's trigger; ValueError (or a LookupError for the zone) when invalid."""
        return CronTrigger.from_crontab(self.cron, timezone=self.timezone)

    def contains(self, moment: datetime) -> bool:
        """True when a window started at most ``duration_s`` before ``moment``."""
        since = moment - timedelta(seconds=self.duration_s) + timedelta(microseconds=1)
        start = self.trigger().get_next_fire_time(None, since)
        return start is not None and start <= moment


@dataclass(frozen=True, slots=True)
class Policy:
    """How the rollout proceeds; thresholds are percentages of a phase's chargers."""

    success_threshold: float = 100.0
    failure_threshold: float = 10.0
    max_concurrent: int = 50
    retries: int = 1
    only_idle: bool = True
    attempt_timeout_s: float = 3600.0
    window: Window | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Policy:
        data = json.loads(text)
        window = data.pop("window", None)
        return cls(**data, window=Window(**window) if window else None)


def phase_sizes(total: int, canary: int | str, waves: Sequence[int | str]) -> list[int]:
    """Sizes of the canary and the waves (``N`` chargers or ``"P%"`` of ``total``, rounded
    up, at least one); whatever is left forms a last wave."""
    sizes: list[int] = []
    left = total
    for spec in (canary, *waves):
        if left == 0:
            break
        if isinstance(spec, str):
            wanted = math.ceil(total * float(spec.rstrip("%")) / 100 - 1e-9)
        else:
            wanted = spec
        size = min(left, max(1, wanted))
        sizes.append(size)
        left -= size
    if left:
        sizes.append(left)
    return sizes


def phase_order(campaign_id: str, charger_ids: Iterable[str]) -> list[str]:
    """A stable shuffle: the canary is spread over the fleet, not the first ids of a site."""
    return sorted(charger_ids, key=lambda c: hashlib.sha256(f"{campaign_id}:{c}".encode()).digest())


def phase_name(index: int) -> str:
    return "canary" if index == 0 else f"wave {index}"


# --- records ---------------------------------------------------------------------------------
@dataclass(slots=True)
class Campaign:
    campaign_id: str
    name: str
    image_id: str
    vendor: str
    model: str
    version: str
    target: dict[str, Any]
    policy: Policy
    phases: list[int]
    state: str
    phase: int
    reason: str | None
    created_at: float
    updated_at: float
    revision: int = 0  # bumped by every write of the row: the engine's compare-and-set


@dataclass(frozen=True, slots=True)
class Assignment:
    """A charger's place in a new campaign: its phase, or skipped with the reason."""

    charger_id: str
    phase: int
    state: str = QUEUED
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class ChargerProgress:
    charger_id: str
    phase: int
    state: str
    reason: str | None
    attempts: int
    desired_set: bool
    started_at: float | None
    updated_at: float
    revision: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.charger_id,
            "phase": self.phase,
            "state": self.state,
            "reason": self.reason,
            "attempts": self.attempts,
            "startedAt": self.started_at,
            "updatedAt": self.updated_at,
        }


@dataclass(frozen=True, slots=True)
class Transition:
    """Move one charger from ``old`` to ``new``: applied only if it still is in ``old``
    and, when ``revision`` is given, still at that revision (nobody wrote it since it was
    read). ``old == new`` with a revision claims the row (e.g. to set the desired firmware
    again) without changing its state."""

    charger_id: str
    old: str
    new: str
    reason: str | None = None
    start: bool = False  # a new attempt: attempts + 1, started_at = now, desired_set
    extra: dict[str, Any] = field(default_factory=dict)
    revision: int | None = None


def _campaign(row: Sequence[Any]) -> Campaign:
    return Campaign(
        campaign_id=str(row[0]),
        name=str(row[1]),
        image_id=str(row[2]),
        vendor=str(row[3]),
        model=str(row[4]),
        version=str(row[5]),
        target=json.loads(row[6]),
        policy=Policy.from_json(row[7]),
        phases=list(json.loads(row[8])),
        state=str(row[9]),
        phase=int(row[10]),
        reason=row[11],
        created_at=float(row[12]),
        updated_at=float(row[13]),
        revision=int(row[14]),
    )


_PROGRESS = (
    "charger_id, phase, state, reason, attempts, desired_set, started_at, updated_at, revision"
)


def _progress(row: Sequence[Any]) -> ChargerProgress:
    return ChargerProgress(
        charger_id=str(row[0]),
        phase=int(row[1]),
        state=str(row[2]),
        reason=row[3],
        attempts=int(row[4]),
        desired_set=bool(row[5]),
        started_at=None if row[6] is None else float(row[6]),
        updated_at=float(row[7]),
        revision=int(row[8]),
    )


def _marks(values: Sequence[Any]) -> str:
    return ", ".join("?" for _ in values)


class CampaignStore:
    """The ``campaigns``, ``campaign_chargers`` and ``campaign_claims`` tables."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create_schema(self) -> None:
        for statement in SCHEMA:
            await self.db.execute(statement)
        for table in _REVISION_COLUMNS:
            await self._add_revision(table)

    async def _add_revision(self, table: str) -> None:
        column = "revision INTEGER NOT NULL DEFAULT 0"
        if not isinstance(self.db, SQLiteDatabase):
            await self.db.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column}")
            return
        pragma = f"PRAGMA table_info({table})"
        if "revision" in {str(r[1]) for r in await self.db.fetchall(pragma)}:
            return
        try:
            await self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column}")
        except DatabaseError:
            # Another component of this machine may have added it since we looked.
            if "revision" not in {str(r[1]) for r in await self.db.fetchall(pragma)}:
                raise

    async def conflicts(self, charger_ids: Sequence[str]) -> dict[str, str]:
        """Which of ``charger_ids`` an active campaign holds, and which campaign."""
        out: dict[str, str] = {}
        for start in range(0, len(charger_ids), _CHUNK):
            chunk = list(charger_ids[start : start + _CHUNK])
            rows = await self.db.fetchall(
                f"SELECT charger_id, campaign_id FROM campaign_claims"
                f" WHERE charger_id IN ({_marks(chunk)})",
                chunk,
            )
            out.update({str(r[0]): str(r[1]) for r in rows})
        return out

    async def create(self, campaign: Campaign, assignments: Sequence[Assignment]) -> None:
        """Insert a campaign with its chargers; :class:`CampaignConflictError` when another
        active campaign holds one of them (then nothing is left behind)."""
        now = campaign.created_at
        c = campaign
        statements: list[tuple[str, Sequence[Any]]] = [
            (
                f"INSERT INTO campaigns ({_CAMPAIGN_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    c.campaign_id,
                    c.name,
                    c.image_id,
                    c.vendor,
                    c.model,
                    c.version,
                    json.dumps(c.target),
                    c.policy.to_json(),
                    json.dumps(c.phases),
                    DRAFT,
                    0,
                    None,
                    now,
                    now,
                ),
            )
        ]
        claimed = [a.charger_id for a in assignments if a.state == QUEUED]
        statements += [
            (
                "INSERT INTO campaign_claims (charger_id, campaign_id) VALUES (?, ?)"
                " ON CONFLICT (charger_id) DO NOTHING",
                (charger_id, c.campaign_id),
            )
            for charger_id in claimed
        ]
        statements += [
            (
                "INSERT INTO campaign_chargers (campaign_id, charger_id, phase, state, reason,"
                " attempts, desired_set, started_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, 0, ?, NULL, ?)",
                (c.campaign_id, a.charger_id, a.phase, a.state, a.reason, False, now),
            )
            for a in assignments
        ]
        counts = await self.db.execute_batch(statements)
        lost = [cid for cid, n in zip(claimed, counts[1 : 1 + len(claimed)], strict=True) if not n]
        if lost:
            holders = await self.conflicts(lost)
            await self.delete(c.campaign_id)
            raise CampaignConflictError(holders or dict.fromkeys(lost, "?"))
        await self.db.execute(
            "UPDATE campaigns SET state = ?, revision = revision + 1 WHERE campaign_id = ?",
            (RUNNING, c.campaign_id),
        )
        campaign.state, campaign.revision = RUNNING, campaign.revision + 1

    async def delete(self, campaign_id: str) -> None:
        await self.db.execute_batch(
            [
                (f"DELETE FROM {table} WHERE campaign_id = ?", (campaign_id,))
                for table in ("campaign_claims", "campaign_chargers", "campaigns")
            ]
        )

    async def get(self, campaign_id: str) -> Campaign:
        row = await self.db.fetchone(
            f"SELECT {_CAMPAIGN_SELECT} FROM campaigns WHERE campaign_id = ? AND state <> ?",
            (campaign_id, DRAFT),
        )
        if row is None:
            raise CampaignNotFoundError(f"no campaign {campaign_id!r}")
        return _campaign(row)

    async def list(self, states: Sequence[str] = CAMPAIGN_STATES) -> builtins.list[Campaign]:
        rows = await self.db.fetchall(
            f"SELECT {_CAMPAIGN_SELECT} FROM campaigns WHERE state IN ({_marks(states)})"
            " ORDER BY created_at, campaign_id",
            list(states),
        )
        return [_campaign(r) for r in rows]

    async def cancelled_with_claims(self) -> builtins.list[Campaign]:
        """Cancelled campaigns whose clean-up is not finished (they still hold chargers)."""
        rows = await self.db.fetchall(
            f"SELECT {_CAMPAIGN_SELECT} FROM campaigns WHERE state = ? AND campaign_id IN"
            " (SELECT campaign_id FROM campaign_claims)",
            (CANCELLED,),
        )
        return [_campaign(r) for r in rows]

    async def counts(self, campaign_id: str) -> dict[tuple[int, str], int]:
        """Chargers per (phase, state)."""
        rows = await self.db.fetchall(
            "SELECT phase, state, COUNT(*) FROM campaign_chargers WHERE campaign_id = ?"
            " GROUP BY phase, state",
            (campaign_id,),
        )
        return {(int(r[0]), str(r[1])): int(r[2]) for r in rows}

    async def chargers(
        self,
        campaign_id: str,
        *,
        states: Sequence[str] | None = None,
        max_phase: int | None = None,
        phase: int | None = None,
        desired_set: bool | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> builtins.list[ChargerProgress]:
        where: builtins.list[str] = ["campaign_id = ?"]
        params: builtins.list[Any] = [campaign_id]
        if states is not None:
            where.append(f"state IN ({_marks(states)})")
            params.extend(states)
        if max_phase is not None:
            where.append("phase <= ?")
            params.append(max_phase)
        if phase is not None:
            where.append("phase = ?")
            params.append(phase)
        if desired_set is not None:
            where.append("desired_set = ?")
            params.append(desired_set)
        rows = await self.db.fetchall(
            f"SELECT {_PROGRESS} FROM campaign_chargers WHERE {' AND '.join(where)}"
            " ORDER BY phase, charger_id LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        return [_progress(r) for r in rows]

    async def apply(
        self,
        campaign_id: str,
        transitions: Sequence[Transition],
        *,
        campaign: Campaign | None = None,
    ) -> builtins.list[bool]:
        """Apply transitions in one transaction; per transition, whether it happened.

        With ``campaign``, each applies only while the campaign is still at that record's
        state and revision (nobody paused, cancelled or advanced it since it was read).
        """
        now = time.time()
        statements = []
        for t in transitions:
            sets = ["state = ?", "reason = ?", "updated_at = ?", "revision = revision + 1"]
            params: list[Any] = [t.new, t.reason, now]
            if t.start:
                sets += ["attempts = attempts + 1", "started_at = ?", "desired_set = ?"]
                params += [now, True]
            for column, value in t.extra.items():
                sets.append(f"{column} = ?")
                params.append(value)
            where = ["campaign_id = ?", "charger_id = ?", "state = ?"]
            params += [campaign_id, t.charger_id, t.old]
            if t.revision is not None:
                where.append("revision = ?")
                params.append(t.revision)
            if campaign is not None:
                where.append(
                    "EXISTS (SELECT 1 FROM campaigns WHERE campaign_id = ? AND state = ?"
                    " AND revision = ?)"
                )
                params += [campaign_id, campaign.state, campaign.revision]
            statements.append(
                (
                    f"UPDATE campaign_chargers SET {', '.join(sets)} WHERE {' AND '.join(where)}",
                    params,
                )
            )
        if not statements:
            return []
        return [n == 1 for n in await self.db.execute_batch(statements)]

    async def set_state(
        self,
        campaign_id: str,
        new: str,
        *,
        old: Sequence[str],
        reason: str | None = None,
        phase: int | None = None,
        revision: int | None = None,
    ) -> bool:
        """Compare-and-set the campaign's state (and phase); False when it was not in ``old``
        (or, with ``revision``, when anything wrote the campaign since it was read)."""
        sets = ["state = ?", "reason = ?", "updated_at = ?", "revision = revision + 1"]
        params: list[Any] = [new, reason, time.time()]
        if phase is not None:
            sets.append("phase = ?")
            params.append(phase)
        where = f"campaign_id = ? AND state IN ({_marks(old)})"
        params += [campaign_id, *old]
        if revision is not None:
            where += " AND revision = ?"
            params.append(revision)
        changed = await self.db.execute(
            f"UPDATE campaigns SET {', '.join(sets)} WHERE {where}", params
        )
        return changed == 1

    async def advance(self, campaign_id: str, from_phase: int, revision: int | None = None) -> bool:
        """Move a running campaign from ``from_phase`` to the next (and, with ``revision``,
        only if nothing wrote it since it was read)."""
        where = "campaign_id = ? AND phase = ? AND state = ?"
        params: list[Any] = [from_phase + 1, time.time(), campaign_id, from_phase, RUNNING]
        if revision is not None:
            where += " AND revision = ?"
            params.append(revision)
        changed = await self.db.execute(
            "UPDATE campaigns SET phase = ?, updated_at = ?, revision = revision + 1"
            f" WHERE {where}",
            params,
        )
        return changed == 1

    async def requeue(self, campaign_id: str, states: Sequence[str], reason: str) -> int:
        """Put chargers in ``states`` back in the queue with their attempts reset (resume)."""
        return await self.db.execute(
            "UPDATE campaign_chargers SET state = ?, reason = ?, attempts = 0, updated_at = ?,"
            f" revision = revision + 1 WHERE campaign_id = ? AND state IN ({_marks(states)})",
            (QUEUED, reason, time.time(), campaign_id, *states),
        )

    async def settle(self, campaign_id: str, states: Sequence[str], new: str, reason: str) -> int:
        """Move every charger in ``states`` to the terminal ``new`` (cancel, skip failed)."""
        return await self.db.execute(
            "UPDATE campaign_chargers SET state = ?, reason = ?, updated_at = ?,"
            f" revision = revision + 1 WHERE campaign_id = ? AND state IN ({_marks(states)})",
            (new, reason, time.time(), campaign_id, *states),
        )

    async def release(self, campaign_id: str) -> None:
        """Drop the campaign's claims: its chargers may join another campaign."""
        await self.db.execute("DELETE FROM campaign_claims WHERE campaign_id = ?", (campaign_id,))

    async def forget_desired(self, campaign_id: str, charger_ids: Sequence[str]) -> None:
        await self.db.execute_batch(
            [
                (
                    "UPDATE campaign_chargers SET desired_set = ?, revision = revision + 1"
                    " WHERE campaign_id = ? AND charger_id = ?",
                    (False, campaign_id, charger_id),
                )
                for charger_id in charger_ids
            ]
        )


def new_campaign_id() -> str:
    return f"cmp_{uuid.uuid4().hex[:16]}"
