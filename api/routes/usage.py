"""Usage over HTTP, shaped for the dashboard's charts: energy and sessions per local day,
session starts by hour of week, and utilization per charger (``fleet.usage``).

Read-only, for viewers. The figures come from the bridge's ``transactions`` table and the
chargers' shadows (their connectors); no time-series store is needed.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Depends, Query

from api.auth import Viewer
from api.backends import Backend, get_backend
from api.params import Moment
from api.problems import Problem, ProblemError, problem_responses
from api.routes.maintenance import epoch
from api.routes.monitoring import _tables
from fleet.sessions import find_sessions
from fleet.usage import usage
from twin.stores import ShadowFilter

router = APIRouter(tags=["monitoring"])

BackendDep = Annotated[Backend, Depends(get_backend)]
DEFAULT_DAYS = 30
MAX_PERIOD_S = 366 * 86400
_ALL = 2**31 - 1


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # "America" is a folder
        error = ProblemError(parameter="timezone", message="not an IANA time zone")
        raise Problem(422, f"unknown time zone {name!r}", errors=[error]) from exc


def _period(start: datetime | None, end: datetime | None, zone: ZoneInfo) -> tuple[float, float]:
    """``[from, to)``; by default the last 30 local days, today included, up to now."""
    hi = epoch(end) if end is not None else time.time()
    if start is not None:
        lo = epoch(start)
    else:
        today = datetime.fromtimestamp(hi - 1e-6, zone).date()
        first = today - timedelta(days=DEFAULT_DAYS - 1)
        lo = datetime(first.year, first.month, first.day, tzinfo=zone).timestamp()
    if hi <= lo:
        error = ProblemError(parameter="to", message="must be after from")
        raise Problem(422, "`to` must be after `from`", errors=[error])
    if hi - lo > MAX_PERIOD_S + 1:
        error = ProblemError(parameter="from", message="at most 366 days before to")
        raise Problem(422, "a period is at most 366 days", errors=[error])
    return lo, hi


async def _chargers(backend: Backend, charger_id: str | None, site: str | None) -> list[str]:
    """The registered chargers in scope: one charger, a site's, or the whole fleet."""
    registered = await backend.registry.list()
    if charger_id is not None:
        if not any(c.charger_id == charger_id for c in registered):
            raise Problem(
                404, f"charger {charger_id!r} is not registered", kind="charger-not-found"
            )
        return [charger_id]
    if site is not None:
        chargers = [c.charger_id for c in registered if c.site == site]
        if not chargers:
            raise Problem(404, f"no charger is registered at site {site!r}", kind="site-not-found")
        return chargers
    return [c.charger_id for c in registered]


async def _ports(backend: Backend, chargers: list[str]) -> dict[str, int]:
    """Each charger's connectors (0, the charger itself, not counted) from its shadow."""
    wanted = set(chargers)
    counts = dict.fromkeys(chargers, 0)
    for summary in await backend.shadows.list(ShadowFilter(limit=_ALL)):
        if summary.charger_id in wanted:
            counts[summary.charger_id] = sum(1 for c in summary.statuses if c != "0")
    return counts


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat().replace("+00:00", "Z")


@router.get(
    "/usage",
    summary="Usage for charts: per day, by hour of week, per charger",
    description="Viewer. Over `[from, to)` (default: the last 30 days in `timezone`, today "
    "included, up to now; at most 366 days), for one charger (`chargerId`), one site "
    "(`site`) or the whole fleet: `days` (every local day: sessions started, energy kWh), "
    "`hourOfWeek.sessionsStarted` (7 x 24, Monday first, local hours) and `chargers` "
    "(sessions, energy, charging hours, ports and utilization per charger). A session "
    "counts on the day and hour it started; see docs/monitoring.md.",
    responses=problem_responses(401, 403, 404, 422),
)
async def get_usage(
    backend: BackendDep,
    _: Viewer,
    charger_id: Annotated[str | None, Query(alias="chargerId", max_length=48)] = None,
    site: Annotated[str | None, Query(max_length=100)] = None,
    start: Annotated[Moment | None, Query(alias="from")] = None,
    end: Annotated[Moment | None, Query(alias="to")] = None,
    timezone: Annotated[str, Query(max_length=64, description="IANA time zone.")] = "UTC",
) -> dict[str, Any]:
    zone = _zone(timezone)
    lo, hi = _period(start, end, zone)
    await _tables(backend)
    chargers = await _chargers(backend, charger_id, site)
    scoped = charger_id is not None or site is not None
    sessions, _count = await find_sessions(
        backend.db, charger_ids=chargers if scoped else None, start=lo, end=hi, limit=1_000_000
    )
    figures = usage(sessions, await _ports(backend, chargers), lo, hi, timezone=timezone)
    return {
        "chargerId": charger_id,
        "site": None if charger_id is not None else site,
        "from": _iso(lo),
        "to": _iso(hi),
        "timezone": timezone,
        **figures,
    }
