"""Alerts over HTTP: list them, acknowledge one, silence a set of them for a while.

The rules engine owns the alerts' state; the API only adds acknowledgements and silences,
which the engine reads on its next evaluation.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, status
from pydantic import BaseModel, ConfigDict, Field

from api.auth import Operator, Viewer
from api.backends import Backend, get_backend
from api.params import EpochSeconds, page_limit
from api.problems import Problem, problem_responses
from chargetwin.database import Database
from rules.alerts import AlertStore

router = APIRouter(tags=["alerts"])

BackendDep = Annotated[Backend, Depends(get_backend)]
_READY: set[int] = set()


async def alert_store(db: Database) -> AlertStore:
    """The alert tables, created on first use (the rules component may not have run yet)."""
    store = AlertStore(db)
    if id(db) not in _READY:
        await store.create_schema()
        _READY.add(id(db))
    return store


class AlertOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    rule: str
    state: str = Field(description="pending, firing or resolved.")
    severity: str
    labels: dict[str, str]
    annotations: dict[str, str]
    value: float | None
    activeAt: float
    firedAt: float | None
    resolvedAt: float | None
    silenced: bool
    inhibited: bool
    acknowledged: bool
    acknowledgedBy: str | None
    ackExpiresAt: float | None


class AcknowledgeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    comment: str | None = Field(None, max_length=1000)
    expiresIn: float | None = Field(
        None,
        gt=0,
        le=366 * 86400,
        description="Seconds until the acknowledgement lapses (at most a year); unset: never.",
    )


class SilenceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    matchers: dict[str, str] = Field(
        min_length=1, description="Label values an alert must all have to be silenced."
    )
    startsAt: EpochSeconds | None = Field(None, description="Epoch seconds; unset: now.")
    endsAt: EpochSeconds | None = Field(None, description="Epoch seconds; or give `duration`.")
    duration: float | None = Field(None, gt=0, le=90 * 86400, description="Seconds from start.")
    comment: str = Field("", max_length=1000)


class SilenceOut(BaseModel):
    id: str
    matchers: dict[str, str]
    startsAt: float
    endsAt: float


def _out(data: dict[str, Any]) -> AlertOut:
    value = data.get("value")
    if isinstance(value, float) and value != value:
        data = {**data, "value": None}
    return AlertOut.model_validate(data)


@router.get(
    "/alerts",
    response_model=list[AlertOut],
    summary="List alerts",
    description="Viewer. Newest first; filter by state (repeatable), severity and charger.",
    responses=problem_responses(401, 403, 422),
)
async def list_alerts(
    backend: BackendDep,
    _: Viewer,
    state: Annotated[list[str] | None, Query(description="pending, firing, resolved.")] = None,
    severity: Annotated[str | None, Query()] = None,
    charger_id: Annotated[str | None, Query(alias="chargerId")] = None,
    limit: Annotated[int, page_limit(1000)] = 200,
) -> list[AlertOut]:
    for wanted in state or []:
        if wanted not in ("pending", "firing", "resolved"):
            raise Problem(422, f"unknown state {wanted!r}: pending, firing or resolved")
    store = await alert_store(backend.db)
    alerts = await store.find(
        states=state or (), severity=severity, charger_id=charger_id, limit=limit
    )
    now = time.time()
    return [_out(a.as_dict(now)) for a in alerts]


@router.post(
    "/alerts/{alert_id}/acknowledge",
    response_model=AlertOut,
    summary="Acknowledge an alert",
    description="Operator. Records who is on it; optionally lapses after `expiresIn` seconds.",
    responses=problem_responses(401, 403, 404, 422),
)
async def acknowledge_alert(
    alert_id: str, backend: BackendDep, who: Operator, body: AcknowledgeIn | None = None
) -> AlertOut:
    body = body or AcknowledgeIn(comment=None, expiresIn=None)
    store = await alert_store(backend.db)
    if await store.get(alert_id) is None:
        raise Problem(404, f"no alert {alert_id!r}", kind="alert-not-found")
    expires = time.time() + body.expiresIn if body.expiresIn else None
    alert = await store.acknowledge(alert_id, who.name, comment=body.comment, expires_at=expires)
    assert alert is not None
    return _out(alert.as_dict())


@router.post(
    "/silences",
    status_code=status.HTTP_201_CREATED,
    response_model=SilenceOut,
    summary="Silence alerts",
    description="Operator. Alerts whose labels match every matcher are not notified and run "
    "no actions until the silence ends (they still show, marked `silenced`).",
    responses=problem_responses(401, 403, 422),
)
async def create_silence(body: SilenceIn, backend: BackendDep, who: Operator) -> SilenceOut:
    starts = body.startsAt or time.time()
    ends = body.endsAt or (starts + body.duration if body.duration else None)
    if ends is None or ends <= starts:
        raise Problem(422, "give endsAt after startsAt, or a duration in seconds")
    store = await alert_store(backend.db)
    silence_id = await store.add_silence(body.matchers, starts, ends, who.name, body.comment)
    return SilenceOut(id=silence_id, matchers=body.matchers, startsAt=starts, endsAt=ends)
