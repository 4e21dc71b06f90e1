"""Maintenance over HTTP: work orders, maintenance windows, scheduled inspections, and a
charger's maintenance history (with its diagnostics files).

Viewers read; operators open, change and cancel. Times are ISO 8601 (a time without an
offset is UTC); every error is a problem document.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.json_schema import SkipJsonSchema

from api.auth import Operator, Viewer
from api.backends import Backend, get_backend
from api.operations import operations_of
from api.params import ChargerIdField, Moment, Offset, page_limit
from api.problems import Problem, ProblemError, problem_responses
from fleet.maintenance import Maintenance
from fleet.windows import Window, WindowNotFound, cron_trigger
from fleet.work_orders import (
    PRIORITIES,
    SOURCES,
    STATUSES,
    InvalidTransition,
    WorkOrder,
    WorkOrderNotFound,
)

router = APIRouter()

BackendDep = Annotated[Backend, Depends(get_backend)]
Status = Literal["open", "in_progress", "resolved", "cancelled"]
Priority = Literal["low", "normal", "high", "urgent"]
Id = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
Text = Annotated[str, Field(min_length=1, max_length=200)]
LongText = Annotated[str, Field(max_length=10_000)]
ChargerId = ChargerIdField

assert set(STATUSES) == set(Status.__args__) and set(PRIORITIES) == set(Priority.__args__)  # type: ignore[attr-defined]


def maintenance_of(backend: Backend) -> Maintenance:
    assert backend.maintenance is not None
    return backend.maintenance


def iso(moment: float | None) -> datetime | None:
    return None if moment is None else datetime.fromtimestamp(moment, UTC)


def epoch(moment: datetime) -> float:
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


async def check_charger(backend: Backend, charger_id: str | None, pointer: str) -> None:
    if charger_id is not None and not await backend.registry.exists(charger_id):
        raise Problem(
            422,
            f"charger {charger_id!r} is not registered",
            kind="unknown-charger",
            errors=[ProblemError(pointer=pointer, message="not a registered charger")],
        )


def check_schedule(cron: str, timezone: str) -> None:
    """A cron expression and time zone APScheduler accepts, or a 422 pointing at ``/cron``."""
    try:
        cron_trigger(cron, timezone)
    except ValueError as exc:
        raise Problem(
            422, str(exc), kind="invalid-schedule",
            errors=[ProblemError(pointer="/cron", message=str(exc))],
        ) from exc  # fmt: skip


# --- work orders ---------------------------------------------------------------------------
class WorkOrderIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "title": "Replace the cable of connector 2",
                "chargerId": "CP-0001",
                "connectorId": "2",
                "priority": "high",
            }
        },
    )

    title: Text
    description: LongText | None = None
    chargerId: ChargerId | None = None
    connectorId: Annotated[str, Field(pattern=r"^[0-9]{1,3}$")] | None = None
    alertId: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    windowId: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    priority: Priority = "normal"
    assignee: Annotated[str, Field(min_length=1, max_length=100)] | None = None


class WorkOrderPatch(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"example": {"status": "in_progress", "note": "technician on site"}},
    )

    # Optional, never null (null answers 422): SkipJsonSchema keeps null out of the
    # documented schema, so the OpenAPI says what the route takes.
    status: Status | SkipJsonSchema[None] = None
    note: LongText | None = Field(None, description="Added to the history.")
    title: Text | SkipJsonSchema[None] = None
    description: LongText | None = None
    priority: Priority | SkipJsonSchema[None] = None
    assignee: Annotated[str, Field(max_length=100)] | None = None
    windowId: Annotated[str, Field(min_length=1, max_length=64)] | None = None


class HistoryEntry(BaseModel):
    model_config = ConfigDict(extra="allow")

    at: datetime
    actor: str
    kind: str = Field(description="created, status, changed or note.")


class DiagnosticsLink(BaseModel):
    name: str
    size: int
    modifiedAt: datetime
    url: str = Field(description="Where to download it (operator).")


class WorkOrderOut(BaseModel):
    id: str
    title: str
    description: str | None
    status: str = Field(description="open, in_progress, resolved or cancelled.")
    source: str = Field(description="manual, rule, inspection or window.")
    priority: str
    assignee: str | None
    chargerId: str | None
    connectorId: str | None
    alertId: str | None
    rule: str | None
    windowId: str | None
    inspectionId: str | None
    createdBy: str | None
    createdAt: datetime
    updatedAt: datetime | None
    startedAt: datetime | None
    resolvedAt: datetime | None
    cancelledAt: datetime | None
    history: list[HistoryEntry] | None = None
    diagnostics: list[DiagnosticsLink] | None = Field(
        None, description="The charger's diagnostics files uploaded while it was open."
    )


class WorkOrderPage(BaseModel):
    items: list[WorkOrderOut]
    total: int
    limit: int
    offset: int


def work_order_out(order: WorkOrder, *, history: bool = False) -> WorkOrderOut:
    return WorkOrderOut(
        id=order.id, title=order.title, description=order.description, status=order.status,
        source=order.source, priority=order.priority, assignee=order.assignee,
        chargerId=order.charger_id, connectorId=order.connector_id, alertId=order.alert_id,
        rule=order.rule, windowId=order.window_id, inspectionId=order.inspection_id,
        createdBy=order.created_by, createdAt=iso(order.created_at),  # type: ignore[arg-type]
        updatedAt=iso(order.updated_at), startedAt=iso(order.started_at),
        resolvedAt=iso(order.resolved_at), cancelledAt=iso(order.cancelled_at),
        diagnostics=None,
        history=(
            [HistoryEntry.model_validate({**h, "at": iso(h["at"])}) for h in order.history]
            if history else None
        ),
    )  # fmt: skip


async def _check_window(backend: Backend, window_id: str | None) -> None:
    if window_id is None:
        return
    try:
        await maintenance_of(backend).windows.get(window_id)
    except WindowNotFound as exc:
        raise Problem(
            422, str(exc), kind="unknown-window",
            errors=[ProblemError(pointer="/windowId", message="no such maintenance window")],
        ) from exc  # fmt: skip


@router.post(
    "/work-orders",
    status_code=status.HTTP_201_CREATED,
    response_model=WorkOrderOut,
    tags=["maintenance"],
    summary="Open a work order",
    description="Operator. Opened `open`; linked to a charger (and connector), an alert, a "
    "maintenance window. One work order per alert: a second one for the same alert is 409.",
    responses=problem_responses(400, 401, 403, 409, 422),
)
async def create_work_order(body: WorkOrderIn, backend: BackendDep, who: Operator) -> WorkOrderOut:
    await check_charger(backend, body.chargerId, "/chargerId")
    await _check_window(backend, body.windowId)
    order = await maintenance_of(backend).work_orders.create(
        body.title, actor=who.name, source="manual", description=body.description,
        charger_id=body.chargerId, connector_id=body.connectorId, alert_id=body.alertId,
        priority=body.priority, assignee=body.assignee, window_id=body.windowId,
    )  # fmt: skip
    if order is None:
        raise Problem(409, f"alert {body.alertId!r} has a work order already", kind="duplicate")
    return work_order_out(order, history=True)


@router.get(
    "/work-orders",
    response_model=WorkOrderPage,
    tags=["maintenance"],
    summary="List work orders",
    description="Viewer. Newest first; filters combine with AND (status is repeatable).",
    responses=problem_responses(401, 403, 422),
)
async def list_work_orders(
    backend: BackendDep,
    _: Viewer,
    status_: Annotated[list[Status] | None, Query(alias="status")] = None,
    charger_id: Annotated[str | None, Query(alias="chargerId", max_length=48)] = None,
    site: Annotated[str | None, Query(max_length=100)] = None,
    source: Annotated[Literal[SOURCES] | None, Query()] = None,  # type: ignore[valid-type]
    alert_id: Annotated[str | None, Query(alias="alertId", max_length=64)] = None,
    window_id: Annotated[str | None, Query(alias="windowId", max_length=64)] = None,
    assignee: Annotated[str | None, Query(max_length=100)] = None,
    created_from: Annotated[Moment | None, Query(alias="from")] = None,
    created_to: Annotated[Moment | None, Query(alias="to")] = None,
    limit: Annotated[int, page_limit(1000)] = 100,
    offset: Offset = 0,
) -> WorkOrderPage:
    chargers: list[str] | None = None
    if site is not None:
        chargers = [c.charger_id for c in await backend.registry.list() if c.site == site]
        if charger_id is not None:
            chargers = [c for c in chargers if c == charger_id]
    elif charger_id is not None:
        chargers = [charger_id]
    orders, total = await maintenance_of(backend).work_orders.list(
        statuses=status_ or (), charger_ids=chargers, source=source, alert_id=alert_id,
        window_id=window_id, assignee=assignee,
        created_from=None if created_from is None else epoch(created_from),
        created_to=None if created_to is None else epoch(created_to),
        limit=limit, offset=offset,
    )  # fmt: skip
    return WorkOrderPage(
        items=[work_order_out(o) for o in orders], total=total, limit=limit, offset=offset
    )


@router.get(
    "/work-orders/{order_id}",
    response_model=WorkOrderOut,
    tags=["maintenance"],
    summary="Get a work order with its history",
    description="Viewer. With every change (who, when) and the charger's diagnostics files "
    "uploaded while it was open.",
    responses=problem_responses(401, 403, 404, 422),
)
async def get_work_order(
    order_id: Id, request: Request, backend: BackendDep, _: Viewer
) -> WorkOrderOut:
    try:
        order = await maintenance_of(backend).work_orders.get(order_id, with_history=True)
    except WorkOrderNotFound as exc:
        raise Problem(404, str(exc), kind="work-order-not-found") from exc
    out = work_order_out(order, history=True)
    out.diagnostics = await _diagnostics(request, order)
    return out


async def _diagnostics(request: Request, order: WorkOrder) -> list[DiagnosticsLink]:
    if order.charger_id is None:
        return []
    until = order.resolved_at or order.cancelled_at or float("inf")
    files = await operations_of(request).uploads.list(order.charger_id)
    return [
        DiagnosticsLink(
            name=f.name, size=f.size, modifiedAt=iso(f.modified_at),  # type: ignore[arg-type]
            url=f"/api/v1/chargers/{order.charger_id}/diagnostics/{f.name}",
        )
        for f in files
        if order.created_at <= f.modified_at <= until
    ]  # fmt: skip


@router.patch(
    "/work-orders/{order_id}",
    response_model=WorkOrderOut,
    tags=["maintenance"],
    summary="Change a work order",
    description="Operator. Status moves open → in_progress → resolved (or cancelled; "
    "resolved and cancelled may be reopened); a move the lifecycle does not allow is 409. "
    "`note` adds a note to the history. Every change is recorded with who and when.",
    responses=problem_responses(400, 401, 403, 404, 409, 422),
)
async def patch_work_order(
    order_id: Id, body: WorkOrderPatch, backend: BackendDep, who: Operator
) -> WorkOrderOut:
    await _check_window(backend, body.windowId)
    changes: dict[str, Any] = {}
    for name, column in (("status", "status"), ("title", "title"),
                         ("description", "description"), ("priority", "priority"),
                         ("assignee", "assignee"), ("windowId", "window_id")):  # fmt: skip
        if name in body.model_fields_set:
            value = getattr(body, name)
            if value is None and name in ("status", "title", "priority"):
                raise Problem(
                    422, f"{name} cannot be null",
                    errors=[ProblemError(pointer=f"/{name}", message="may not be null")],
                )  # fmt: skip
            changes[column] = value or None if name == "assignee" else value
    if not changes and not body.note:
        raise Problem(422, "nothing to change: give a field or a note", kind="empty-patch")
    try:
        order = await maintenance_of(backend).work_orders.update(
            order_id, changes, actor=who.name, note=body.note
        )
    except WorkOrderNotFound as exc:
        raise Problem(404, str(exc), kind="work-order-not-found") from exc
    except InvalidTransition as exc:
        raise Problem(409, str(exc), kind="invalid-transition") from exc
    return work_order_out(order, history=True)


# --- maintenance windows -------------------------------------------------------------------
class WindowIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "title": "Cable replacement",
                    "chargerId": "CP-0001",
                    "startsAt": "2026-07-01T02:00:00Z",
                    "endsAt": "2026-07-01T04:00:00Z",
                },
                {
                    "title": "Weekly check",
                    "site": "depot-north",
                    "cron": "0 2 * * 0",
                    "durationMinutes": 60,
                    "timezone": "Europe/Berlin",
                },
            ]
        },
    )

    title: Text
    description: LongText | None = None
    chargerId: ChargerId | None = None
    site: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    startsAt: Moment | None = Field(None, description="One-off start; recurring: from.")
    endsAt: Moment | None = Field(None, description="One-off end; recurring: until.")
    cron: Annotated[str, Field(max_length=100)] | None = Field(
        None, description="Recurring: a 5-field cron expression (0 and 7 are Sunday)."
    )
    durationMinutes: Annotated[float, Field(gt=0, le=7 * 1440)] | None = None
    timezone: Annotated[str, Field(max_length=64)] = "UTC"
    createWorkOrder: bool = Field(
        False, description="Also open a work order linked to the window, per charger."
    )

    @model_validator(mode="after")
    def _shape(self) -> WindowIn:
        if (self.chargerId is None) == (self.site is None):
            raise ValueError("give either chargerId or site")
        if self.cron is None:
            if self.startsAt is None or self.endsAt is None:
                raise ValueError("a one-off window needs startsAt and endsAt (or give cron)")
            if self.durationMinutes is not None:
                raise ValueError("durationMinutes is for recurring windows (with cron)")
        elif self.durationMinutes is None:
            raise ValueError("a recurring window needs durationMinutes")
        if self.startsAt and self.endsAt and epoch(self.endsAt) <= epoch(self.startsAt):
            raise ValueError("endsAt must be after startsAt")
        return self


class WindowOut(BaseModel):
    id: str
    title: str
    description: str | None
    chargerId: str | None
    site: str | None
    startsAt: datetime | None
    endsAt: datetime | None
    cron: str | None
    durationMinutes: float | None
    timezone: str | None
    createdBy: str
    createdAt: datetime
    cancelledAt: datetime | None
    active: bool = Field(description="An occurrence is in progress now.")
    nextStart: datetime | None = Field(description="The next occurrence's start (7 days).")
    workOrders: list[str] = Field([], description="Ids of the work orders linked to it.")


async def window_out(backend: Backend, window: Window, now: float) -> WindowOut:
    orders, _ = await maintenance_of(backend).work_orders.list(window_id=window.id, limit=1000)
    upcoming = [o for o in window.occurrences(now, now + 7 * 86400) if o.start > now]
    return WindowOut(
        id=window.id, title=window.title, description=window.description,
        chargerId=window.charger_id, site=window.site, startsAt=iso(window.starts_at),
        endsAt=iso(window.ends_at), cron=window.cron,
        durationMinutes=None if window.duration_s is None else window.duration_s / 60,
        timezone=window.timezone, createdBy=window.created_by,
        createdAt=iso(window.created_at),  # type: ignore[arg-type]
        cancelledAt=iso(window.cancelled_at),
        active=any(o.start <= now < o.end for o in window.occurrences(now, now + 1e-6)),
        nextStart=iso(upcoming[0].start) if upcoming else None,
        workOrders=[o.id for o in orders],
    )  # fmt: skip


@router.post(
    "/maintenance-windows",
    status_code=status.HTTP_201_CREATED,
    response_model=WindowOut,
    tags=["maintenance"],
    summary="Schedule a maintenance window",
    description="Operator. For one charger or every charger of a site; one-off or recurring "
    "(cron, duration, time zone). At the start the charger is made Inoperative through its "
    "desired availability; at the end the value desired before is restored. Overlapping "
    "windows keep it out until the last one ends. Its time is excluded from uptime.",
    responses=problem_responses(400, 401, 403, 422),
)
async def create_window(body: WindowIn, backend: BackendDep, who: Operator) -> WindowOut:
    await check_charger(backend, body.chargerId, "/chargerId")
    if body.cron is not None:
        check_schedule(body.cron, body.timezone)
    maintenance = maintenance_of(backend)
    window = await maintenance.windows.create(
        title=body.title, created_by=who.name, charger_id=body.chargerId, site=body.site,
        description=body.description,
        starts_at=None if body.startsAt is None else epoch(body.startsAt),
        ends_at=None if body.endsAt is None else epoch(body.endsAt), cron=body.cron,
        duration_s=None if body.durationMinutes is None else body.durationMinutes * 60,
        timezone=body.timezone if body.cron else None,
    )  # fmt: skip
    if body.createWorkOrder:
        targets = [body.chargerId] if body.chargerId else [
            c.charger_id for c in await backend.registry.list() if c.site == body.site
        ]  # fmt: skip
        for charger_id in targets:
            await maintenance.work_orders.create(
                body.title, actor=who.name, source="window", description=body.description,
                charger_id=charger_id, window_id=window.id,
            )  # fmt: skip
    backend.wake_fleet("maintenance")
    return await window_out(backend, window, maintenance.scheduler.clock())


@router.get(
    "/maintenance-windows",
    response_model=list[WindowOut],
    tags=["maintenance"],
    summary="List maintenance windows",
    description="Viewer. Oldest first; `chargerId` also finds the windows of its site.",
    responses=problem_responses(401, 403, 422),
)
async def list_windows(
    backend: BackendDep,
    _: Viewer,
    charger_id: Annotated[str | None, Query(alias="chargerId", max_length=48)] = None,
    site: Annotated[str | None, Query(max_length=100)] = None,
    include_cancelled: Annotated[bool, Query(alias="includeCancelled")] = False,
) -> list[WindowOut]:
    maintenance = maintenance_of(backend)
    chargers = sites = None
    if charger_id is not None or site is not None:
        chargers = [charger_id] if charger_id else []
        sites = [site] if site else []
        if charger_id is not None and await backend.registry.exists(charger_id):
            own = (await backend.registry.get(charger_id)).site
            if own:
                sites.append(own)
    windows = await maintenance.windows.list(
        charger_ids=chargers, sites=sites, include_cancelled=include_cancelled
    )
    now = maintenance.scheduler.clock()
    return [await window_out(backend, w, now) for w in windows]


@router.get(
    "/maintenance-windows/{window_id}",
    response_model=WindowOut,
    tags=["maintenance"],
    summary="Get a maintenance window",
    description="Viewer.",
    responses=problem_responses(401, 403, 404, 422),
)
async def get_window(window_id: Id, backend: BackendDep, _: Viewer) -> WindowOut:
    maintenance = maintenance_of(backend)
    try:
        window = await maintenance.windows.get(window_id)
    except WindowNotFound as exc:
        raise Problem(404, str(exc), kind="window-not-found") from exc
    return await window_out(backend, window, maintenance.scheduler.clock())


@router.delete(
    "/maintenance-windows/{window_id}",
    response_model=WindowOut,
    tags=["maintenance"],
    summary="Cancel a maintenance window",
    description="Operator. A window in progress ends now (the charger is returned); its "
    "time until now stays excluded from uptime.",
    responses=problem_responses(401, 403, 404, 422),
)
async def cancel_window(window_id: Id, backend: BackendDep, _: Operator) -> WindowOut:
    maintenance = maintenance_of(backend)
    try:
        window = await maintenance.windows.cancel(window_id, maintenance.scheduler.clock())
    except WindowNotFound as exc:
        raise Problem(404, str(exc), kind="window-not-found") from exc
    backend.wake_fleet("maintenance")
    return await window_out(backend, window, maintenance.scheduler.clock())
