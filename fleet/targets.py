"""Which chargers an operation aims at: a filter or a list, resolved against the stores.

Campaigns and configuration profiles both act on "these chargers": a filter on what the
charger reported (vendor, model, firmware version: shadow columns) and on what the operator
registered (site, tags: the charger registry), or an explicit list of ids. Resolution reads
the registry once and the shadow summaries in chunks, so it costs a few queries per
thousand chargers, never one per charger.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from chargetwin.database import Database
from twin.registry import ChargerRegistry
from twin.stores import ShadowFilter, ShadowStore, ShadowSummary

CHUNK = 500
MAX_IDS = 100_000


class TargetError(ValueError):
    """The target cannot be resolved (unknown ids, no criterion at all)."""


class Target(BaseModel):
    """Chargers by filter (every given criterion must hold) or by explicit ids."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        json_schema_extra={"example": {"vendor": "ChargeTwin", "model": "CT-AC22", "site": "HQ"}},
    )

    charger_ids: list[str] | None = Field(
        None, max_length=MAX_IDS, description="Exactly these chargers (all must be registered)."
    )
    vendor: str | None = Field(None, description="Reported chargePointVendor.")
    model: str | None = Field(None, description="Reported chargePointModel.")
    firmware_version: str | None = Field(None, description="Reported firmware version now.")
    site: str | None = Field(None, description="Site in the charger registry.")
    tags: list[str] | None = Field(
        None, max_length=50, description="Registry tags; a charger must carry all of them."
    )

    def is_empty(self) -> bool:
        return all(v is None for v in self.model_dump().values())


@dataclass(frozen=True, slots=True)
class TargetCharger:
    """A resolved charger with what its shadow says now (None: it never connected)."""

    charger_id: str
    vendor: str | None
    model: str | None
    firmware_version: str | None
    online: bool
    statuses: dict[str, str]


async def resolve(
    registry: ChargerRegistry, shadows: ShadowStore, target: Target
) -> list[TargetCharger]:
    """The registered chargers that match ``target``, ordered by id."""
    if target.is_empty():
        raise TargetError("give at least one criterion (chargerIds, vendor, model, ...)")
    registered = await registry.list()
    if target.charger_ids is not None:
        wanted = set(target.charger_ids)
        unknown = sorted(wanted - {c.charger_id for c in registered})
        if unknown:
            raise TargetError(
                f"{len(unknown)} charger id(s) are not registered: {', '.join(unknown[:20])}"
            )
        registered = [c for c in registered if c.charger_id in wanted]
    if target.site is not None:
        registered = [c for c in registered if c.site == target.site]
    if target.tags:
        needed = set(target.tags)
        registered = [c for c in registered if needed <= set(c.tags)]
    ids = [c.charger_id for c in registered]
    summaries: dict[str, ShadowSummary] = {}
    for start in range(0, len(ids), CHUNK):
        chunk = tuple(ids[start : start + CHUNK])
        for summary in await shadows.list(ShadowFilter(charger_ids=chunk, limit=len(chunk))):
            summaries[summary.charger_id] = summary
    out = []
    for charger_id in ids:
        s: ShadowSummary | None = summaries.get(charger_id)
        found = TargetCharger(
            charger_id,
            s.vendor if s else None,
            s.model if s else None,
            s.firmware_version if s else None,
            s.online if s else False,
            dict(s.statuses) if s else {},
        )
        if target.vendor is not None and found.vendor != target.vendor:
            continue
        if target.model is not None and found.model != target.model:
            continue
        if (
            target.firmware_version is not None
            and found.firmware_version != target.firmware_version
        ):
            continue
        out.append(found)
    return out


async def documents(db: Database, charger_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The public shadow documents of ``charger_ids`` (those that have one), in chunks.

    One query per :data:`CHUNK` chargers, where ``ShadowStore.get_document`` costs one each.
    """
    out: dict[str, dict[str, Any]] = {}
    for start in range(0, len(charger_ids), CHUNK):
        chunk = list(charger_ids[start : start + CHUNK])
        marks = ", ".join("?" for _ in chunk)
        rows = await db.fetchall(
            f"SELECT charger_id, document FROM shadows WHERE charger_id IN ({marks})", chunk
        )
        for charger_id, document in rows:
            out[str(charger_id)] = dict(orjson.loads(document))  # the twin wrote it
    return out


async def versions(db: Database, charger_ids: Sequence[str]) -> dict[str, int]:
    """The shadow version of each of ``charger_ids`` that has a shadow: one small query per
    :data:`CHUNK`, to tell which documents changed since they were last read."""
    out: dict[str, int] = {}
    for start in range(0, len(charger_ids), CHUNK):
        chunk = list(charger_ids[start : start + CHUNK])
        marks = ", ".join("?" for _ in chunk)
        rows = await db.fetchall(
            f"SELECT charger_id, version FROM shadows WHERE charger_id IN ({marks})", chunk
        )
        out.update({str(charger_id): int(version) for charger_id, version in rows})
    return out


async def versioned_documents(
    db: Database, charger_ids: Sequence[str]
) -> dict[str, tuple[int, dict[str, Any]]]:
    """As :func:`documents`, each with the version it was read at."""
    out: dict[str, tuple[int, dict[str, Any]]] = {}
    for start in range(0, len(charger_ids), CHUNK):
        chunk = list(charger_ids[start : start + CHUNK])
        marks = ", ".join("?" for _ in chunk)
        rows = await db.fetchall(
            f"SELECT charger_id, version, document FROM shadows WHERE charger_id IN ({marks})",
            chunk,
        )
        for charger_id, version, document in rows:
            out[str(charger_id)] = (int(version), dict(orjson.loads(document)))
    return out


def section(document: dict[str, Any] | None, *path: str) -> dict[str, Any]:
    """``document["state"][path...]`` as a dict, ``{}`` wherever something is missing."""
    node: Any = (document or {}).get("state")
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else {}
