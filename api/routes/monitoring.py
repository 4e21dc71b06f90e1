"""Monitoring over HTTP: sessions (JSON and EV-ChART CSV), KPIs, port uptime per
23 CFR 680.116(b) with the outages behind it, outage exclusions, and the NEVI quarterly
report (23 CFR 680.112). Viewers read; operators record exclusions.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.auth import Operator, Viewer
from api.backends import Backend, get_backend
from api.params import Moment, Offset, page_limit
from api.problems import Problem, ProblemError, problem_responses
from api.routes.maintenance import ChargerId, check_charger, epoch, maintenance_of
from bridge.stores import TransactionStore
from chargetwin.topics import CHARGER_ID_PATTERN
from fleet.kpis import kpis
from fleet.outages import ExclusionStore, uptimes
from fleet.sessions import CSV_FIELDS, find_sessions, to_csv, with_peaks
from fleet.uptime import (
    EXCLUSION_REASONS,
    PortUptime,
    parse_month,
    parse_quarter,
    quarter_bounds,
    twelve_months_ending,
)
from rules.series import SeriesError, SeriesStore

router = APIRouter(tags=["monitoring"])

BackendDep = Annotated[Backend, Depends(get_backend)]
CSV = "text/csv"
OUTAGE_FIELDS = (
    "outage_id", "port_id", "charger_id", "outage_start", "outage_end", "outage_duration",
    "excluded_outage", "excluded_outage_reason", "cause", "open",
)  # fmt: skip
PORT_PATTERN = CHARGER_ID_PATTERN.pattern.removesuffix("$") + "/[0-9]{1,3}$"
_READY: set[int] = set()


@contextlib.asynccontextmanager
async def series_of(backend: Backend) -> AsyncIterator[SeriesStore]:
    """A store opened for one request (the SQLite store caches its series list at open)."""
    if backend.series is None:
        raise Problem(503, "no time-series store is configured", kind="no-series-store")
    store = backend.series()
    try:
        await store.open()
    except SeriesError as exc:
        raise Problem(503, f"the time-series store is unavailable: {exc}") from exc
    try:
        yield store
    except SeriesError as exc:
        raise Problem(503, f"the time-series store failed: {exc}") from exc
    finally:
        await store.close()


async def _tables(backend: Backend) -> None:
    """The tables read here, created on first use (the bridge may not have run yet)."""
    if id(backend.db) not in _READY:
        await TransactionStore(backend.db).create_schema()
        await ExclusionStore(backend.db).create_schema()
        _READY.add(id(backend.db))


def _wants_csv(request: Request, format_: str | None) -> bool:
    return format_ == "csv" or (format_ is None and CSV in request.headers.get("accept", ""))


def _csv(body: str, name: str) -> Response:
    return Response(
        body, media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )  # fmt: skip


async def _scope(backend: Backend, scope: str, scope_id: str | None) -> list[str] | None:
    """The chargers of a scope (None: the whole fleet)."""
    if scope == "fleet":
        return None
    if not scope_id:
        raise Problem(
            422, f"scope={scope} needs an id",
            errors=[ProblemError(parameter="id", message="required for this scope")],
        )  # fmt: skip
    if scope == "charger":
        if not await backend.registry.exists(scope_id):
            raise Problem(404, f"charger {scope_id!r} is not registered", kind="charger-not-found")
        return [scope_id]
    chargers = [c.charger_id for c in await backend.registry.list() if c.site == scope_id]
    if not chargers:
        raise Problem(404, f"no charger is registered at site {scope_id!r}", kind="site-not-found")
    return chargers


def _period(start: datetime | None, end: datetime | None, days: int = 30) -> tuple[float, float]:
    now = time.time()
    hi = epoch(end) if end is not None else now
    lo = epoch(start) if start is not None else hi - days * 86400
    if hi <= lo:
        raise Problem(
            422, "`to` must be after `from`",
            errors=[ProblemError(parameter="to", message="must be after from")],
        )  # fmt: skip
    if hi - lo > 366 * 86400 + 1:
        raise Problem(
            422, "a period is at most 366 days",
            errors=[ProblemError(parameter="from", message="at most 366 days before to")],
        )  # fmt: skip
    return lo, hi


# --- sessions ----------------------------------------------------------------------------
class SessionPage(BaseModel):
    items: list[dict[str, Any]] = Field(description="EV-ChART session records.")
    total: int
    limit: int
    offset: int


@router.get(
    "/sessions",
    response_model=SessionPage,
    summary="List charging sessions",
    description="Viewer. Newest first, by start. EV-ChART field names; `Accept: text/csv` "
    "(or `format=csv`, or `/sessions.csv`) answers CSV of the same page.",
    responses={
        200: {"content": {CSV: {}}, "description": "Sessions (JSON or CSV)."},
        **problem_responses(401, 403, 422, 503),
    },
)
async def list_sessions(
    request: Request,
    backend: BackendDep,
    _: Viewer,
    charger_id: Annotated[str | None, Query(alias="chargerId", max_length=48)] = None,
    site: Annotated[str | None, Query(max_length=100)] = None,
    connector_id: Annotated[int | None, Query(alias="connectorId", ge=0, le=999)] = None,
    start: Annotated[Moment | None, Query(alias="from")] = None,
    end: Annotated[Moment | None, Query(alias="to")] = None,
    id_tag: Annotated[str | None, Query(alias="idTag", max_length=20)] = None,
    stop_reason: Annotated[str | None, Query(alias="stopReason", max_length=40)] = None,
    limit: Annotated[int, page_limit(10_000)] = 100,
    offset: Offset = 0,
    format_: Annotated[Literal["json", "csv"] | None, Query(alias="format")] = None,
) -> Any:
    await _tables(backend)
    chargers: list[str] | None = None
    if site is not None:
        chargers = [c.charger_id for c in await backend.registry.list() if c.site == site]
    if charger_id is not None:
        chargers = [c for c in (chargers or [charger_id]) if c == charger_id]
    if start is not None and end is not None and epoch(end) <= epoch(start):
        raise Problem(
            422,
            "`to` must be after `from`",
            errors=[ProblemError(parameter="to", message="must be after from")],
        )
    sessions, total = await find_sessions(
        backend.db, charger_ids=chargers, connector_id=connector_id,
        start=None if start is None else epoch(start), end=None if end is None else epoch(end),
        id_tag=id_tag, stop_reason=stop_reason, limit=limit, offset=offset,
    )  # fmt: skip
    async with series_of(backend) as store:
        sessions = await with_peaks(store, sessions, time.time())
    records = [s.record() for s in sessions]
    if _wants_csv(request, format_):
        return _csv(to_csv(records, CSV_FIELDS), "sessions.csv")
    return SessionPage(items=records, total=total, limit=limit, offset=offset)


@router.get(
    "/sessions.csv",
    summary="Charging sessions as EV-ChART CSV",
    description="Viewer. The same filters as `/sessions`.",
    response_class=Response,
    responses={200: {"content": {CSV: {}}}, **problem_responses(401, 403, 422, 503)},
)
async def sessions_csv(
    request: Request,
    backend: BackendDep,
    who: Viewer,
    charger_id: Annotated[str | None, Query(alias="chargerId", max_length=48)] = None,
    site: Annotated[str | None, Query(max_length=100)] = None,
    connector_id: Annotated[int | None, Query(alias="connectorId", ge=0, le=999)] = None,
    start: Annotated[Moment | None, Query(alias="from")] = None,
    end: Annotated[Moment | None, Query(alias="to")] = None,
    id_tag: Annotated[str | None, Query(alias="idTag", max_length=20)] = None,
    stop_reason: Annotated[str | None, Query(alias="stopReason", max_length=40)] = None,
    limit: Annotated[int, page_limit(10_000)] = 10_000,
    offset: Offset = 0,
) -> Any:
    return await list_sessions(
        request, backend, who, charger_id=charger_id, site=site, connector_id=connector_id,
        start=start, end=end, id_tag=id_tag, stop_reason=stop_reason, limit=limit,
        offset=offset, format_="csv",
    )  # fmt: skip


# --- KPIs --------------------------------------------------------------------------------
@router.get(
    "/kpis",
    summary="KPIs of the fleet, a site or a charger",
    description="Viewer. Sessions, energy, charging hours, utilization (charging time / "
    "available time), success rate, usage by hour of week (in `timezone`), and reliability "
    "(MTTR of outages and work orders, MTBF). Default period: the 30 days before `to` "
    "(default now); at most 366 days.",
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def get_kpis(
    backend: BackendDep,
    _: Viewer,
    scope: Annotated[Literal["fleet", "site", "charger"], Query()] = "fleet",
    scope_id: Annotated[str | None, Query(alias="id", max_length=100)] = None,
    start: Annotated[Moment | None, Query(alias="from")] = None,
    end: Annotated[Moment | None, Query(alias="to")] = None,
    timezone: Annotated[str, Query(max_length=64)] = "UTC",
) -> dict[str, Any]:
    from fleet.windows import cron_trigger

    try:
        cron_trigger("0 0 * * *", timezone)
    except ValueError as exc:
        error = ProblemError(parameter="timezone", message=str(exc))
        raise Problem(422, str(exc), errors=[error]) from exc
    await _tables(backend)
    chargers = await _scope(backend, scope, scope_id)
    lo, hi = _period(start, end)
    sessions, _count = await find_sessions(
        backend.db, charger_ids=chargers, start=lo, end=hi, limit=1_000_000
    )
    async with series_of(backend) as store:
        ports = await uptimes(store, backend.db, backend.registry, chargers, lo, hi)
    orders, _count = await maintenance_of(backend).work_orders.list(
        charger_ids=chargers, created_from=lo, created_to=hi, limit=1_000_000
    )
    figures = kpis(sessions, ports, orders, lo, hi, timezone=timezone)
    return {"scope": scope, "id": scope_id, "from": _iso(lo), "to": _iso(hi),
            "timezone": timezone, **figures}  # fmt: skip


# --- uptime ------------------------------------------------------------------------------
def _outage_rows(figure: PortUptime) -> list[dict[str, Any]]:
    return [
        {
            "outage_id": r.outage_id, "port_id": r.port_id,
            "charger_id": r.port_id.rsplit("/", 1)[0], "outage_start": _iso(r.start),
            "outage_end": None if r.open else _iso(r.end),
            "outage_duration": round(r.outage_duration, 3),
            "excluded_outage": r.excluded_outage,
            "excluded_outage_reason": r.excluded_outage_reason, "cause": r.cause,
            "open": r.open,
        }
        for r in figure.outages
    ]  # fmt: skip


def _port_row(figure: PortUptime) -> dict[str, Any]:
    charger, connector = figure.port_id.rsplit("/", 1)
    return {
        "port_id": figure.port_id, "charger_id": charger, "connector_id": int(connector),
        "uptime": round(figure.uptime, 4),
        "meets_97_percent": figure.uptime > 97.0,
        "outage_minutes": round(figure.outage_minutes, 3),
        "excluded_minutes": round(figure.excluded_minutes, 3),
        "counted_outage_minutes": round(figure.outage_minutes - figure.excluded_minutes, 3),
    }  # fmt: skip


def _month_period(month: str | None) -> tuple[str, float, float]:
    now = time.time()
    if month is None:
        month = datetime.fromtimestamp(now, UTC).strftime("%Y-%m")
    try:
        year, number = parse_month(month)
    except ValueError as exc:
        error = ProblemError(parameter="month", message=str(exc))
        raise Problem(422, str(exc), errors=[error]) from exc
    lo, hi = twelve_months_ending(year, number)
    if lo >= now:
        error = ProblemError(parameter="month", message="in the future")
        raise Problem(422, f"{month} has not begun", errors=[error])
    return month, lo, min(hi, now)


@router.get(
    "/uptime",
    summary="Uptime per port (23 CFR 680.116(b))",
    description="Viewer. mu = ((525,600 - (T_outage - T_excluded)) / 525,600) x 100 over the "
    "twelve months ending with `month` (default: this month, up to now), with every outage "
    "behind each figure (EV-ChART outage fields). `port` is `{chargerId}/{connectorId}`.",
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def get_uptime(
    backend: BackendDep,
    _: Viewer,
    port: Annotated[str | None, Query(max_length=60, pattern=PORT_PATTERN)] = None,
    charger_id: Annotated[str | None, Query(alias="chargerId", max_length=48)] = None,
    site: Annotated[str | None, Query(max_length=100)] = None,
    month: Annotated[str | None, Query(max_length=7)] = None,
) -> dict[str, Any]:
    await _tables(backend)
    month, lo, hi = _month_period(month)
    chargers: list[str] | None = None
    if port is not None:
        charger_id = port.rsplit("/", 1)[0]
    if charger_id is not None:
        chargers = await _scope(backend, "charger", charger_id)
    elif site is not None:
        chargers = await _scope(backend, "site", site)
    async with series_of(backend) as store:
        figures = await uptimes(store, backend.db, backend.registry, chargers, lo, hi)
    if port is not None:
        figures = [f for f in figures if f.port_id == port]
    return {
        "month": month, "period_start": _iso(lo), "period_end": _iso(hi),
        "period_minutes": round((hi - lo) / 60, 3),
        "ports": [{**_port_row(f), "outages": _outage_rows(f)} for f in figures],
    }  # fmt: skip


# --- exclusions --------------------------------------------------------------------------
class ExclusionIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "chargerId": "CP-0001",
                "startsAt": "2026-07-04T13:00:00Z",
                "endsAt": "2026-07-04T15:30:00Z",
                "reason": "utility_interruption",
                "note": "utility ticket 4711",
            }
        },
    )

    chargerId: ChargerId
    connectorId: Annotated[int, Field(ge=1, le=999)] | None = Field(
        None, description="One port; unset: every port of the charger."
    )
    startsAt: Moment
    endsAt: Moment
    reason: Literal[tuple(EXCLUSION_REASONS)] = Field(  # type: ignore[valid-type]
        description="Outside the operator's control (23 CFR 680.116(b))."
    )
    note: Annotated[str, Field(max_length=2000)] | None = None

    @model_validator(mode="after")
    def _order(self) -> ExclusionIn:
        if epoch(self.endsAt) <= epoch(self.startsAt):
            raise ValueError("endsAt must be after startsAt")
        return self


@router.post(
    "/outage-exclusions",
    status_code=status.HTTP_201_CREATED,
    summary="Record an excluded outage period",
    description="Operator. Outage time of the charger (or one port) inside this period "
    "counts as excluded in uptime, with the reason given. Scheduled maintenance comes from "
    "maintenance windows by itself.",
    responses=problem_responses(400, 401, 403, 422),
)
async def create_exclusion(body: ExclusionIn, backend: BackendDep, who: Operator) -> dict[str, Any]:
    await _tables(backend)
    await check_charger(backend, body.chargerId, "/chargerId")
    return await ExclusionStore(backend.db).create(
        charger_id=body.chargerId,
        connector_id=None if body.connectorId is None else str(body.connectorId),
        starts_at=epoch(body.startsAt), ends_at=epoch(body.endsAt), reason=body.reason,
        note=body.note, created_by=who.name,
    )  # fmt: skip


@router.get(
    "/outage-exclusions",
    summary="List excluded outage periods",
    description="Viewer.",
    responses=problem_responses(401, 403, 422),
)
async def list_exclusions(
    backend: BackendDep,
    _: Viewer,
    charger_id: Annotated[str | None, Query(alias="chargerId", max_length=48)] = None,
) -> list[dict[str, Any]]:
    await _tables(backend)
    return await ExclusionStore(backend.db).list([charger_id] if charger_id else None)


@router.delete(
    "/outage-exclusions/{exclusion_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove an excluded outage period",
    description="Operator.",
    responses=problem_responses(401, 403, 404),
)
async def delete_exclusion(exclusion_id: str, backend: BackendDep, _: Operator) -> Response:
    await _tables(backend)
    if not await ExclusionStore(backend.db).delete(exclusion_id):
        raise Problem(404, f"no exclusion {exclusion_id!r}", kind="exclusion-not-found")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --- NEVI quarterly report ---------------------------------------------------------------
@router.get(
    "/reports/nevi",
    summary="NEVI quarterly data (23 CFR 680.112)",
    description="Viewer. For each month of the quarter that has ended, each port's uptime "
    "over the twelve months ending with it; the quarter's sessions and outages. CSV "
    "(`Accept: text/csv` or `format=csv`) gives one table: `table=uptime` (default), "
    "`sessions` or `outages`.",
    responses={200: {"content": {CSV: {}}}, **problem_responses(401, 403, 422, 503)},
)
async def nevi_report(
    request: Request,
    backend: BackendDep,
    _: Viewer,
    quarter: Annotated[str, Query(max_length=6)],
    format_: Annotated[Literal["json", "csv"] | None, Query(alias="format")] = None,
    table: Annotated[Literal["uptime", "sessions", "outages"], Query()] = "uptime",
) -> Any:
    await _tables(backend)
    try:
        year, number = parse_quarter(quarter)
    except ValueError as exc:
        error = ProblemError(parameter="quarter", message=str(exc))
        raise Problem(422, str(exc), errors=[error]) from exc
    q_lo, q_hi = quarter_bounds(year, number)
    now = time.time()
    if q_lo >= now:
        error = ProblemError(parameter="quarter", message="in the future")
        raise Problem(422, f"{quarter} has not begun", errors=[error])
    uptime_rows: list[dict[str, Any]] = []
    outage_rows: list[dict[str, Any]] = []
    async with series_of(backend) as store:
        for month in range(3 * (number - 1) + 1, 3 * number + 1):
            lo, hi = twelve_months_ending(year, month)
            if hi > now:  # only months that have ended
                break
            label = f"{year}-{month:02d}"
            for figure in await uptimes(
                store, backend.db, backend.registry, None, lo, min(hi, now)
            ):
                uptime_rows.append({"month": label, **_port_row(figure)})
        for figure in await uptimes(
            store, backend.db, backend.registry, None, q_lo, min(q_hi, now)
        ):
            outage_rows.extend(_outage_rows(figure))
        sessions, _count = await find_sessions(backend.db, start=q_lo, end=q_hi, limit=1_000_000)
        sessions = await with_peaks(store, sessions, now)
    session_rows = [s.record() for s in sessions]
    if _wants_csv(request, format_):
        fields = {"uptime": ("month", *_port_row_fields()), "sessions": CSV_FIELDS,
                  "outages": OUTAGE_FIELDS}[table]  # fmt: skip
        rows = {"uptime": uptime_rows, "sessions": session_rows, "outages": outage_rows}[table]
        return _csv(to_csv(rows, fields), f"nevi-{quarter}-{table}.csv")
    return {
        "quarter": quarter, "quarter_start": _iso(q_lo), "quarter_end": _iso(q_hi),
        "generated_at": _iso(now), "uptime": uptime_rows, "sessions": session_rows,
        "outages": outage_rows,
    }  # fmt: skip


def _port_row_fields() -> tuple[str, ...]:
    return (
        "port_id", "charger_id", "connector_id", "uptime", "meets_97_percent",
        "outage_minutes", "excluded_minutes", "counted_outage_minutes",
    )  # fmt: skip


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat().replace("+00:00", "Z")
