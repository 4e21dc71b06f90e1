"""Scheduled inspections over HTTP: a cron schedule that opens a work order per charger.

Viewers read; operators create and cancel. The maintenance scheduler opens the work orders
(source ``inspection``) when an inspection falls due; a missed run is made up at start-up.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, status
from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.auth import Operator, Viewer
from api.backends import Backend, get_backend
from api.problems import Problem, problem_responses
from api.routes.maintenance import (
    ChargerId,
    Id,
    LongText,
    Text,
    check_charger,
    check_schedule,
    iso,
    maintenance_of,
)
from fleet.inspections import Inspection, InspectionNotFound

router = APIRouter(prefix="/inspections", tags=["maintenance"])

BackendDep = Annotated[Backend, Depends(get_backend)]


class InspectionIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "title": "Quarterly safety inspection",
                    "site": "depot-north",
                    "cron": "0 8 1 */3 *",
                    "timezone": "Europe/Berlin",
                }
            ]
        },
    )

    title: Text
    description: LongText | None = None
    chargerId: ChargerId | None = None
    site: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    cron: Annotated[str, Field(min_length=1, max_length=100)] = Field(
        description="A 5-field cron expression (0 and 7 are Sunday)."
    )
    timezone: Annotated[str, Field(max_length=64)] = "UTC"

    @model_validator(mode="after")
    def _one_target(self) -> InspectionIn:
        if (self.chargerId is None) == (self.site is None):
            raise ValueError("give either chargerId or site")
        return self


class InspectionOut(BaseModel):
    id: str
    title: str
    description: str | None
    chargerId: str | None
    site: str | None
    cron: str
    timezone: str
    createdBy: str
    createdAt: datetime
    lastRunAt: datetime | None
    cancelledAt: datetime | None
    nextDue: datetime | None = Field(description="When it next opens work orders.")


def inspection_out(inspection: Inspection) -> InspectionOut:
    return InspectionOut(
        id=inspection.id, title=inspection.title, description=inspection.description,
        chargerId=inspection.charger_id, site=inspection.site, cron=inspection.cron,
        timezone=inspection.timezone, createdBy=inspection.created_by,
        createdAt=iso(inspection.created_at),  # type: ignore[arg-type]
        lastRunAt=iso(inspection.last_run_at), cancelledAt=iso(inspection.cancelled_at),
        nextDue=None if inspection.cancelled_at is not None else iso(inspection.next_due()),
    )  # fmt: skip


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=InspectionOut,
    summary="Schedule an inspection",
    description="Operator. For one charger or every charger of a site: each time the cron "
    "schedule falls due, a work order (source `inspection`) is opened per charger.",
    responses=problem_responses(400, 401, 403, 422),
)
async def create_inspection(
    body: InspectionIn, backend: BackendDep, who: Operator
) -> InspectionOut:
    await check_charger(backend, body.chargerId, "/chargerId")
    check_schedule(body.cron, body.timezone)
    maintenance = maintenance_of(backend)
    inspection = await maintenance.inspections.create(
        title=body.title, cron=body.cron, timezone=body.timezone, created_by=who.name,
        charger_id=body.chargerId, site=body.site, description=body.description,
        now=maintenance.scheduler.clock(),
    )  # fmt: skip
    backend.wake_fleet("maintenance")
    return inspection_out(inspection)


@router.get(
    "",
    response_model=list[InspectionOut],
    summary="List inspections",
    description="Viewer. Oldest first.",
    responses=problem_responses(401, 403, 422),
)
async def list_inspections(
    backend: BackendDep,
    _: Viewer,
    include_cancelled: Annotated[bool, Query(alias="includeCancelled")] = False,
) -> list[InspectionOut]:
    inspections = await maintenance_of(backend).inspections.list(
        include_cancelled=include_cancelled
    )
    return [inspection_out(i) for i in inspections]


@router.get(
    "/{inspection_id}",
    response_model=InspectionOut,
    summary="Get an inspection",
    description="Viewer.",
    responses=problem_responses(401, 403, 404, 422),
)
async def get_inspection(inspection_id: Id, backend: BackendDep, _: Viewer) -> InspectionOut:
    try:
        return inspection_out(await maintenance_of(backend).inspections.get(inspection_id))
    except InspectionNotFound as exc:
        raise Problem(404, str(exc), kind="inspection-not-found") from exc


@router.delete(
    "/{inspection_id}",
    response_model=InspectionOut,
    summary="Cancel an inspection",
    description="Operator. Work orders it already opened stay.",
    responses=problem_responses(401, 403, 404, 422),
)
async def cancel_inspection(inspection_id: Id, backend: BackendDep, _: Operator) -> InspectionOut:
    maintenance = maintenance_of(backend)
    try:
        inspection = await maintenance.inspections.cancel(
            inspection_id, maintenance.scheduler.clock()
        )
    except InspectionNotFound as exc:
        raise Problem(404, str(exc), kind="inspection-not-found") from exc
    backend.wake_fleet("maintenance")
    return inspection_out(inspection)
