"""Sites as twins: a site's desired energy state (its limit, minimum, failsafe, strategy and
time-of-use schedule) and what the allocator reported for it (load, allocation, headroom,
last breach).

A site is the ``site`` of its chargers in the charger registry; it exists as soon as one
charger names it, and has no limit until an operator desires one. The desired state is
one JSON document per site with a version, changed by JSON merge patches (RFC 7396) and
checked by :func:`energy_errors` (the API answers 422 with its messages). The schedule's
windows are cron expressions with a duration, the same cron handling as maintenance
windows (:func:`fleet.windows.cron_trigger`).

Tables: ``site_energy`` (desired, its version, who changed it when) and ``site_reports``
(the allocator's last report per site; it also carries what the allocator must keep over
a restart: who runs since when, who waits since when).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any

import orjson
from jsonschema import Draft202012Validator

from chargetwin.database import Database
from fleet.allocation import DEFAULT_MINIMUM_A, STRATEGIES
from fleet.windows import Window, cron_trigger

DEFAULT_RATED_A = 32.0  # a charger of the site whose rated current the operator did not give
DEFAULT_VOLTAGE = 230.0  # phase-to-neutral, for limits given in kW
MAX_SCHEDULE_WINDOWS = 50

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS site_energy (
        site TEXT PRIMARY KEY, desired TEXT NOT NULL, version INTEGER NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL, updated_by TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS site_reports (
        site TEXT PRIMARY KEY, reported TEXT NOT NULL, updated_at DOUBLE PRECISION NOT NULL)""",
)

_AMPS = {"type": "number", "minimum": 0, "maximum": 10_000}
_LIMITS = {
    "limitA": {**_AMPS, "description": "Amperes per phase the site may draw."},
    "limitKW": {
        "type": "number",
        "minimum": 0,
        "maximum": 100_000,
        "description": "Kilowatts the site may draw (turned into A per phase with "
        "`voltage` and `phases`). With `limitA` too, the lower of the two holds.",
    },
}
ENERGY_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "urn:chargetwin:site-energy",
    "title": "Desired energy state of a site",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        **_LIMITS,
        "phases": {"enum": [1, 3], "description": "Phases of the site's grid connection."},
        "voltage": {"type": "number", "minimum": 100, "maximum": 400},
        "minimumA": {
            "type": "number",
            "minimum": 1,
            "maximum": 80,
            "description": "The least a charging connector is offered; below it, paused. "
            "6 A by default (IEC 61851-1).",
        },
        "failsafeA": {
            **_AMPS,
            "description": "Per charger: what it may draw when it cannot reach the platform "
            "(a ChargePointMaxProfile at stack level 0, which caps it online too: at least "
            "`minimumA`).",
        },
        "strategy": {"enum": list(STRATEGIES)},
        "ratedA": {**_AMPS, "description": "Rated current of a connector (default 32 A)."},
        "chargers": {
            "type": "object",
            "description": "Per charger id: its rated current per connector, phases, priority "
            "(at most 2,000 chargers with settings of their own, so a whole state fits the "
            "API's 256 KiB body limit).",
            # What fits the API's body limit: a state the API could not take is no state.
            "maxProperties": 2000,
            "additionalProperties": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "ratedA": _AMPS,
                    "phases": {"enum": [1, 3]},
                    "priority": {"type": "integer", "minimum": -100, "maximum": 100},
                },
            },
        },
        "tagPriorities": {
            "type": "object",
            "description": "Priority by tag: a charger tag of the registry or the idTag "
            "of the session (the highest that applies wins; per charger wins over tags).",
            "maxProperties": 1000,
            "additionalProperties": {"type": "integer", "minimum": -100, "maximum": 100},
        },
        "schedule": {
            "type": "array",
            "maxItems": MAX_SCHEDULE_WINDOWS,
            "description": "Time-of-use windows: while one is open its limit holds instead "
            "(the lowest of those open).",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["cron", "durationMinutes"],
                "properties": {
                    **_LIMITS,
                    "name": {"type": "string", "maxLength": 100},
                    "cron": {"type": "string", "minLength": 1, "maxLength": 100},
                    "durationMinutes": {"type": "number", "exclusiveMinimum": 0, "maximum": 10080},
                    "timezone": {"type": "string", "maxLength": 64},
                },
            },
        },
    },
}
_validator = Draft202012Validator(ENERGY_SCHEMA)


class SiteNotFound(Exception):
    pass


class VersionConflict(Exception):
    """The desired state changed since the version the caller read."""


def energy_errors(desired: dict[str, Any]) -> list[tuple[str, str]]:
    """``(JSON pointer, message)`` for every problem; empty when ``desired`` is valid."""
    out: list[tuple[str, str]] = []
    for error in sorted(_validator.iter_errors(desired), key=lambda e: list(e.absolute_path)):
        pointer = "".join("/" + str(p) for p in error.absolute_path)
        out.append((pointer, error.message))
    if out:
        return out
    minimum = float(desired.get("minimumA", DEFAULT_MINIMUM_A))
    failsafe = desired.get("failsafeA")
    if failsafe is not None and failsafe < minimum:
        # A ChargePointMaxProfile caps the charger online too: below the minimum it could
        # never charge.
        out.append(("/failsafeA", f"{failsafe} A is below the minimum current {minimum:g} A"))
    for charger_id, spec in (desired.get("chargers") or {}).items():
        rated = spec.get("ratedA")
        if rated is not None and 0 < rated < minimum:
            out.append((f"/chargers/{charger_id}/ratedA",
                        f"{rated} A is below the minimum current {minimum:g} A"))  # fmt: skip
    for i, window in enumerate(desired.get("schedule") or []):
        if "limitA" not in window and "limitKW" not in window:
            out.append((f"/schedule/{i}", "a window needs limitA or limitKW"))
        try:
            cron_trigger(window["cron"], window.get("timezone", "UTC"))
        except ValueError as exc:
            out.append((f"/schedule/{i}/cron", str(exc)))
    return out


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396: objects merge, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def amps_of(limits: dict[str, Any], desired: dict[str, Any]) -> float | None:
    """A per phase from ``limitA`` and/or ``limitKW`` (the lower of both); None: neither."""
    candidates = []
    if limits.get("limitA") is not None:
        candidates.append(float(limits["limitA"]))
    if limits.get("limitKW") is not None:
        phases = int(desired.get("phases", 3))
        voltage = float(desired.get("voltage", DEFAULT_VOLTAGE))
        candidates.append(float(limits["limitKW"]) * 1000 / (voltage * phases))
    return min(candidates) if candidates else None


@dataclass(frozen=True, slots=True)
class LimitNow:
    """The limit that holds at one moment and why; ``next_edge``: when it may change."""

    amps: float | None
    window: str | None  # the schedule window that sets it, None: the base limit
    next_edge: float | None


def _window(spec: dict[str, Any]) -> Window:
    return Window(
        id="", charger_id=None, site=None, title=str(spec.get("name", "")), description=None,
        starts_at=None, ends_at=None, cron=str(spec["cron"]),
        duration_s=float(spec["durationMinutes"]) * 60, timezone=spec.get("timezone", "UTC"),
        created_by="", created_at=0.0,
    )  # fmt: skip


def limit_at(desired: dict[str, Any], now: float) -> LimitNow:
    """The site's limit at ``now``: the lowest of the open schedule windows, else the base."""
    base = amps_of(desired, desired)
    chosen: tuple[float, str] | None = None
    edges: list[float] = []
    for i, spec in enumerate(desired.get("schedule") or []):
        window = _window(spec)
        if any(o.start <= now < o.end for o in window.occurrences(now, now + 1e-6)):
            amps = amps_of(spec, desired)
            if amps is not None and (chosen is None or amps < chosen[0]):
                chosen = (amps, str(spec.get("name") or f"schedule[{i}]"))
        edge = window.next_edge(now)
        if edge is not None:
            edges.append(edge)
    next_edge = min(edges) if edges else None
    if chosen is None:
        return LimitNow(base, None, next_edge)
    return LimitNow(chosen[0], chosen[1], next_edge)


@dataclass(frozen=True, slots=True)
class SiteEnergy:
    site: str
    desired: dict[str, Any]
    version: int
    updated_at: float | None
    updated_by: str | None


class SiteStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create_schema(self) -> None:
        for statement in SCHEMA:
            await self.db.execute(statement)

    async def names(self) -> list[str]:
        """Every site: named by a charger of the registry, or given an energy state."""
        rows = await self.db.fetchall(
            "SELECT site FROM chargers WHERE site IS NOT NULL UNION SELECT site FROM site_energy"
        )
        return sorted(str(r[0]) for r in rows if r[0])

    async def chargers(self, site: str) -> list[tuple[str, list[str]]]:
        """The site's chargers with their registry tags."""
        rows = await self.db.fetchall(
            "SELECT charger_id, tags FROM chargers WHERE site = ? ORDER BY charger_id", (site,)
        )
        return [(str(r[0]), list(json.loads(r[1] or "[]"))) for r in rows]

    async def chargers_by_site(self) -> dict[str, list[tuple[str, list[str]]]]:
        """Every site's chargers with their registry tags, in one query."""
        rows = await self.db.fetchall(
            "SELECT site, charger_id, tags FROM chargers WHERE site IS NOT NULL"
            " ORDER BY site, charger_id"
        )
        out: dict[str, list[tuple[str, list[str]]]] = {}
        for site, charger_id, tags in rows:
            out.setdefault(str(site), []).append((str(charger_id), list(json.loads(tags or "[]"))))
        return out

    async def documents(self, charger_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The shadow documents of these chargers (``{}`` for one without a shadow), read
        from the shadow store in one query (the engine never writes them there)."""
        out: dict[str, dict[str, Any]] = {key: {} for key in charger_ids}
        if charger_ids:
            marks = ", ".join("?" for _ in charger_ids)
            rows = await self.db.fetchall(
                f"SELECT charger_id, document FROM shadows WHERE charger_id IN ({marks})",
                tuple(charger_ids),
            )
            out.update({str(r[0]): dict(orjson.loads(r[1])) for r in rows})  # the twin's
        return out

    async def exists(self, site: str) -> bool:
        row = await self.db.fetchone(
            "SELECT 1 FROM chargers WHERE site = ? UNION SELECT 1 FROM site_energy WHERE site = ?",
            (site, site),
        )
        return row is not None

    async def energy(self, site: str) -> SiteEnergy:
        row = await self.db.fetchone(
            "SELECT desired, version, updated_at, updated_by FROM site_energy WHERE site = ?",
            (site,),
        )
        if row is None:
            if not await self.exists(site):
                raise SiteNotFound(f"no site {site!r}: no charger names it")
            return SiteEnergy(site, {}, 0, None, None)
        return SiteEnergy(site, dict(json.loads(row[0])), int(row[1]), float(row[2]), str(row[3]))

    async def all_energy(self) -> dict[str, SiteEnergy]:
        rows = await self.db.fetchall(
            "SELECT site, desired, version, updated_at, updated_by FROM site_energy"
        )
        return {
            str(r[0]): SiteEnergy(
                str(r[0]), dict(json.loads(r[1])), int(r[2]), float(r[3]), str(r[4])
            )
            for r in rows
        }

    async def patch_energy(
        self,
        site: str,
        patch: dict[str, Any],
        *,
        actor: str,
        expected_version: int | None = None,
        now: float | None = None,
    ) -> tuple[SiteEnergy, list[tuple[str, str]]]:
        """Merge ``patch`` into the desired state; the new state and its problems (when
        there are problems nothing is stored). A compare-and-set on the version read."""
        current = await self.energy(site)
        if expected_version is not None and expected_version != current.version:
            raise VersionConflict(
                f"site {site!r} is at version {current.version}, not {expected_version}"
            )
        merged = merge_patch(current.desired, patch)
        errors = energy_errors(merged)
        if errors:
            return current, errors
        stamp = time.time() if now is None else now
        text = json.dumps(merged, sort_keys=True)
        if current.version == 0:
            changed = await self.db.execute(
                "INSERT INTO site_energy (site, desired, version, updated_at, updated_by)"
                " VALUES (?, ?, 1, ?, ?) ON CONFLICT (site) DO NOTHING",
                (site, text, stamp, actor),
            )
        else:
            changed = await self.db.execute(
                "UPDATE site_energy SET desired = ?, version = version + 1, updated_at = ?,"
                " updated_by = ? WHERE site = ? AND version = ?",
                (text, stamp, actor, site, current.version),
            )
        if changed != 1:
            raise VersionConflict(f"site {site!r} changed meanwhile; read it again")
        return SiteEnergy(site, merged, current.version + 1, stamp, actor), []

    async def report(self, site: str) -> dict[str, Any] | None:
        row = await self.db.fetchone("SELECT reported FROM site_reports WHERE site = ?", (site,))
        return None if row is None else dict(json.loads(row[0]))

    async def reports(self) -> dict[str, dict[str, Any]]:
        rows = await self.db.fetchall("SELECT site, reported FROM site_reports")
        return {str(r[0]): dict(json.loads(r[1])) for r in rows}

    async def put_report(
        self, site: str, reported: dict[str, Any], now: float, text: str | None = None
    ) -> None:
        """Store the site's report; ``text`` is ``reported`` as JSON when the caller has it
        already (the engine serializes it once, for the store and MQTT)."""
        if text is None:
            text = json.dumps(reported, allow_nan=False)
        await self.db.execute(
            "INSERT INTO site_reports (site, reported, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT (site) DO UPDATE SET reported = excluded.reported,"
            " updated_at = excluded.updated_at",
            (site, text, now),
        )


def finite(value: Any) -> float | None:
    """A float, or None for anything that is not a finite number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None
