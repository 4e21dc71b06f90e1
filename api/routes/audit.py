"""The audit log over HTTP: who changed which charger's desired state, and how it ended."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from api.auth import Viewer
from api.backends import Backend, get_backend
from api.models import AuditEntryOut
from api.problems import problem_responses
from api.routes.chargers import find_charger

router = APIRouter(tags=["audit"])

BackendDep = Annotated[Backend, Depends(get_backend)]
Limit = Annotated[int, Query(ge=1, le=1000, description="Newest entries first, at most this many.")]


@router.get(
    "/audit",
    response_model=list[AuditEntryOut],
    summary="Read the audit log",
    description="Viewer. Desired-state changes of the whole fleet, or of one charger with "
    "`chargerId`, newest first, refused ones included.",
    responses=problem_responses(401, 403, 422),
)
async def list_audit(
    backend: BackendDep,
    _: Viewer,
    charger_id: Annotated[
        str | None, Query(alias="chargerId", description="Only this charger's entries.")
    ] = None,
    charger_id_snake: Annotated[
        str | None,
        Query(alias="charger_id", deprecated=True, description="Same as `chargerId`."),
    ] = None,
    limit: Limit = 100,
) -> list[AuditEntryOut]:
    wanted = charger_id or charger_id_snake
    entries = await backend.audit.list(charger_id=wanted, limit=limit)
    return [AuditEntryOut.model_validate(e.as_dict()) for e in entries]


@router.get(
    "/chargers/{charger_id}/audit",
    response_model=list[AuditEntryOut],
    summary="Read a charger's audit log",
    description="Viewer. The charger's desired-state changes, newest first.",
    responses=problem_responses(401, 403, 404, 422),
)
async def list_charger_audit(
    charger_id: str, backend: BackendDep, _: Viewer, limit: Limit = 100
) -> list[AuditEntryOut]:
    await find_charger(backend, charger_id)
    entries = await backend.audit.list(charger_id=charger_id, limit=limit)
    return [AuditEntryOut.model_validate(e.as_dict()) for e in entries]
