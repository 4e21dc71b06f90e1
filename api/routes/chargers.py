"""Chargers: the registry joined with the shadow summaries the twin keeps.

A registered charger without a shadow (it never connected) is listed as offline with
version 0. Query parameters use the same camelCase names as the JSON fields.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response, status

from api.auth import Admin, Viewer
from api.backends import Backend, get_backend
from api.models import ChargerCreate, ChargerOut, ChargerPage
from api.params import Offset, page_limit
from api.problems import Problem, problem_responses
from chargetwin.shadow_client import ShadowRequestError
from twin.registry import Charger, ChargerExistsError, ChargerNotFoundError
from twin.stores import ShadowFilter, ShadowSummary

log = logging.getLogger(__name__)

router = APIRouter(prefix="/chargers", tags=["chargers"])

BackendDep = Annotated[Backend, Depends(get_backend)]
_ALL = 2**31 - 1


def charger_out(charger: Charger, summary: ShadowSummary | None) -> ChargerOut:
    shadow: dict[str, Any] = (
        summary.as_dict()
        if summary is not None
        else {
            "version": 0,
            "online": False,
            "vendor": None,
            "model": None,
            "firmwareVersion": None,
            "hasDelta": False,
            "connectors": {},
            "updatedAt": None,
        }
    )
    return ChargerOut.model_validate({**shadow, **charger.as_dict()})


async def find_charger(backend: Backend, charger_id: str) -> Charger:
    """The registered charger, or a 404 problem."""
    try:
        return await backend.registry.get(charger_id)
    except ChargerNotFoundError as exc:
        raise Problem(
            404, f"charger {charger_id!r} is not registered", kind="charger-not-found"
        ) from exc


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ChargerOut,
    summary="Register a charger",
    description="Admin. The charger may then connect over OCPP-J with HTTP Basic auth "
    "(user = id). Answers 409 when the id is taken, 422 for an invalid id or password.",
    responses=problem_responses(401, 403, 409, 422),
)
async def register_charger(
    body: ChargerCreate, backend: BackendDep, _: Admin, response: Response
) -> ChargerOut:
    try:
        charger = await backend.registry.register(
            body.id, body.password, site=body.site, tags=body.tags, description=body.description
        )
    except ChargerExistsError as exc:
        raise Problem(
            409, f"charger {body.id!r} is already registered", kind="charger-exists"
        ) from exc
    response.headers["Location"] = f"/api/v1/chargers/{charger.charger_id}"
    summary = await backend.shadows.list(ShadowFilter(charger_ids=(charger.charger_id,)))
    return charger_out(charger, summary[0] if summary else None)


@router.get(
    "",
    response_model=ChargerPage,
    summary="List chargers",
    description="Viewer. Every filter is optional and they combine with AND. `status` "
    "matches chargers with at least one connector in that OCPP status.",
    responses=problem_responses(401, 403, 422),
)
async def list_chargers(
    backend: BackendDep,
    _: Viewer,
    online: Annotated[bool | None, Query(description="Connected right now.")] = None,
    connector_status: Annotated[
        str | None,
        Query(
            alias="status",
            pattern="^[A-Za-z]{1,30}$",
            description="An OCPP connector status, e.g. Faulted.",
        ),
    ] = None,
    vendor: Annotated[str | None, Query(description="chargePointVendor as booted.")] = None,
    model: Annotated[str | None, Query(description="chargePointModel as booted.")] = None,
    firmware_version: Annotated[
        str | None, Query(alias="firmwareVersion", description="Reported firmware version.")
    ] = None,
    has_delta: Annotated[
        bool | None, Query(alias="hasDelta", description="Desired differs from reported.")
    ] = None,
    limit: Annotated[int, page_limit(1000)] = 100,
    offset: Offset = 0,
) -> ChargerPage:
    registered = await backend.registry.list()
    criteria = ShadowFilter(
        online=online,
        status=connector_status,
        vendor=vendor,
        model=model,
        firmware_version=firmware_version,
        has_delta=has_delta,
        limit=_ALL,
    )
    needs_shadow = (
        any(v is not None for v in (connector_status, vendor, model, firmware_version))
        or online is True
        or has_delta is True
    )
    if criteria == ShadowFilter(limit=_ALL):
        matched = registered
    else:
        # O(fleet) per request: fine for thousands of chargers; a store-side join would
        # serve larger fleets (see the report to the twin's owners).
        hits = {s.charger_id for s in await backend.shadows.list(criteria)}
        if not needs_shadow:
            # online=false / hasDelta=false also hold for chargers that have no shadow yet.
            with_shadow = {
                s.charger_id for s in await backend.shadows.list(ShadowFilter(limit=_ALL))
            }
            hits |= {c.charger_id for c in registered if c.charger_id not in with_shadow}
        matched = [c for c in registered if c.charger_id in hits]
    page = matched[offset : offset + limit]
    summaries = {
        s.charger_id: s
        for s in await backend.shadows.list(
            ShadowFilter(charger_ids=tuple(c.charger_id for c in page), limit=len(page) or 1)
        )
    }
    return ChargerPage(
        items=[charger_out(c, summaries.get(c.charger_id)) for c in page],
        total=len(matched),
        limit=limit,
        offset=offset,
    )


@router.get(
    "/{charger_id}",
    response_model=ChargerOut,
    summary="Get a charger",
    description="Viewer. Registry information and the shadow summary.",
    responses=problem_responses(401, 403, 404),
)
async def get_charger(charger_id: str, backend: BackendDep, _: Viewer) -> ChargerOut:
    charger = await find_charger(backend, charger_id)
    summary = await backend.shadows.list(ShadowFilter(charger_ids=(charger_id,), limit=1))
    return charger_out(charger, summary[0] if summary else None)


@router.delete(
    "/{charger_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Unregister a charger",
    description="Admin. The charger can no longer connect, and its shadow is deleted. "
    "The charger's history (sessions, telemetry, audit log) is kept.",
    responses=problem_responses(401, 403, 404),
)
async def delete_charger(charger_id: str, backend: BackendDep, _: Admin) -> Response:
    try:
        await backend.registry.delete(charger_id)
    except ChargerNotFoundError as exc:
        raise Problem(
            404, f"charger {charger_id!r} is not registered", kind="charger-not-found"
        ) from exc
    try:
        await backend.shadow_client.delete(charger_id)
    except ShadowRequestError as exc:
        # 404: it never had a shadow. Anything else: the registration is gone already, so
        # the charger cannot connect; say the shadow is left for the operator to retry.
        if exc.code != 404:
            log.warning(
                "charger %s unregistered, but its shadow was not deleted: %s", charger_id, exc
            )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
