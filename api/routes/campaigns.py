"""Firmware campaigns over HTTP: create, follow, pause, resume, cancel (docs/campaigns.md).

Creation is where the rules are enforced: the image must fit every targeted charger's
reported vendor and model (422 listing those it does not fit, unless ``skipIncompatible``
excludes them), and no charger may be in two active campaigns (409 listing them). The
engine (:mod:`fleet.rollouts`) does the rest from the database.
"""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from api.auth import Operator, Viewer
from api.backends import Backend, backend_of, get_backend
from api.params import MAX_OFFSET, Offset, page_limit
from api.problems import Problem, ProblemError, problem_responses
from fleet.campaigns import (
    ACTIVE,
    CAMPAIGN_STATES,
    CANCELLED,
    CHARGER_STATES,
    EXCLUDED_PHASE,
    FAILED,
    IN_FLIGHT,
    PAUSED,
    QUEUED,
    RUNNING,
    SKIPPED,
    Assignment,
    Campaign,
    CampaignConflictError,
    CampaignNotFoundError,
    CampaignStore,
    Policy,
    Window,
    new_campaign_id,
    phase_name,
    phase_order,
    phase_sizes,
)
from fleet.targets import Target, TargetCharger, TargetError, resolve
from twin.catalog import FirmwareNotFoundError

log = logging.getLogger(__name__)

router = APIRouter(prefix="/campaigns", tags=["campaigns"])

BackendDep = Annotated[Backend, Depends(get_backend)]
PhaseSize = (
    Annotated[int, Field(ge=1, le=MAX_OFFSET)]
    | Annotated[str, Field(pattern=r"^\d{1,3}(\.\d+)?%$")]
)


class _Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class WindowIn(_Wire):
    """Updates start only inside a window: from each cron time, for ``durationMinutes``."""

    cron: str = Field(description="Five-field crontab of window starts (`0 2 * * *`).")
    timezone: str = Field("UTC", description="IANA time zone of the cron expression.")
    duration_minutes: int = Field(120, ge=1, le=7 * 24 * 60)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            Window("* * * * *", value).trigger()
        except (ValueError, LookupError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        try:
            Window(value).trigger()
        except ValueError as exc:
            raise ValueError(f"invalid cron expression: {exc}") from exc
        return value


class CampaignCreate(_Wire):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        json_schema_extra={
            "example": {
                "name": "CT-AC22 1.5.0",
                "firmwareId": "fw_3f2a9c0d1e7b4a55",
                "target": {"vendor": "ChargeTwin", "model": "CT-AC22"},
                "canary": 5,
                "waves": ["25%", "50%"],
                "successThreshold": 100,
                "failureThreshold": 10,
                "maxConcurrent": 50,
                "retries": 1,
                "onlyIdle": True,
                "window": {"cron": "0 2 * * *", "timezone": "Europe/Berlin"},
            }
        },
    )

    name: str = Field(min_length=1, max_length=100)
    firmware_id: str = Field(description="The catalog image to roll out.")
    target: Target
    skip_incompatible: bool = Field(
        False, description="Exclude (and list) chargers the image does not fit instead of 422."
    )
    canary: PhaseSize = Field(1, description="Chargers in the canary: N or `P%`.")
    waves: list[PhaseSize] = Field(
        [], max_length=50, description="Then these waves (N or `P%`); the rest forms a last wave."
    )
    success_threshold: float = Field(
        100.0, ge=0, le=100, description="Percent of a phase installed before the next starts."
    )
    failure_threshold: float = Field(
        10.0,
        ge=0,
        le=100,
        description="The campaign pauses when more than this percent of a phase failed.",
    )
    max_concurrent: int = Field(50, ge=1, le=100_000, description="Updates in flight at most.")
    retries: int = Field(1, ge=0, le=10, description="Attempts after the first, per charger.")
    only_idle: bool = Field(
        True,
        description="Start only on chargers with no connector in use (Charging, "
        "SuspendedEV, SuspendedEVSE, Preparing, Finishing; OCPP 2.0.1: Occupied).",
    )
    attempt_timeout_s: float = Field(
        3600.0, ge=1, le=7 * 86400, description="An attempt without news this long is retried."
    )
    window: WindowIn | None = None


class Resume(_Wire):
    failed: Literal["retry", "skip"] = Field(
        "retry", description="Failed chargers are queued again (retry) or skipped for good."
    )


class PhaseOut(BaseModel):
    index: int
    name: str
    size: int
    counts: dict[str, int]


class Excluded(BaseModel):
    id: str
    reason: str


class CampaignOut(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    id: str
    name: str
    state: str = Field(description="running, paused, completed or cancelled.")
    reason: str | None = Field(description="Why it paused (threshold, operator).")
    firmware: dict[str, str]
    target: dict[str, Any]
    policy: dict[str, Any]
    phase: int = Field(description="Index of the phase reached (0 is the canary).")
    phases: list[PhaseOut]
    counts: dict[str, int] = Field(description="Chargers per state.")
    total: int
    created_at: float
    updated_at: float
    excluded: list[Excluded] | None = Field(
        None, description="On creation: chargers left out, and why."
    )


class ChargerProgressOut(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    id: str
    phase: int
    state: str
    reason: str | None
    attempts: int
    started_at: float | None
    updated_at: float


class ChargerProgressPage(BaseModel):
    items: list[ChargerProgressOut]
    limit: int
    offset: int


def _store(backend: Backend) -> CampaignStore:
    return CampaignStore(backend.db)


async def campaign_out(
    store: CampaignStore, campaign: Campaign, excluded: list[Excluded] | None = None
) -> CampaignOut:
    counts = await store.counts(campaign.campaign_id)
    totals = dict.fromkeys(CHARGER_STATES, 0)
    for (_, state), n in counts.items():
        totals[state] = totals.get(state, 0) + n
    phases = [
        PhaseOut(
            index=i,
            name=phase_name(i),
            size=size,
            counts={s: counts.get((i, s), 0) for s in CHARGER_STATES if counts.get((i, s))},
        )
        for i, size in enumerate(campaign.phases)
    ]
    policy = campaign.policy
    return CampaignOut(
        id=campaign.campaign_id,
        name=campaign.name,
        state=campaign.state,
        reason=campaign.reason,
        firmware={
            "id": campaign.image_id,
            "vendor": campaign.vendor,
            "model": campaign.model,
            "version": campaign.version,
        },
        target=campaign.target,
        policy={
            "successThreshold": policy.success_threshold,
            "failureThreshold": policy.failure_threshold,
            "maxConcurrent": policy.max_concurrent,
            "retries": policy.retries,
            "onlyIdle": policy.only_idle,
            "attemptTimeoutS": policy.attempt_timeout_s,
            "window": None
            if policy.window is None
            else {
                "cron": policy.window.cron,
                "timezone": policy.window.timezone,
                "durationMinutes": policy.window.duration_s / 60,
            },
        },
        phase=campaign.phase,
        phases=phases,
        counts=totals,
        total=sum(totals.values()),
        created_at=campaign.created_at,
        updated_at=campaign.updated_at,
        excluded=excluded,
    )


async def _find(store: CampaignStore, campaign_id: str) -> Campaign:
    try:
        return await store.get(campaign_id)
    except CampaignNotFoundError as exc:
        raise Problem(404, str(exc), kind="campaign-not-found") from exc


def _unfit(charger: TargetCharger, vendor: str, model: str) -> str | None:
    if charger.vendor is None or charger.model is None:
        return "it never booted, so its vendor and model are unknown"
    if (charger.vendor, charger.model) != (vendor, model):
        return f"it reports {charger.vendor} {charger.model}, the image is for {vendor} {model}"
    return None


def _wake(request: Request) -> None:
    backend_of(request).wake_fleet("campaigns")


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=CampaignOut,
    response_model_by_alias=True,
    summary="Start a firmware campaign",
    description="Operator. Resolves the target now and splits it into a canary and waves. "
    "422 when the image does not fit a targeted charger (`firmware-does-not-fit`, unless "
    "`skipIncompatible`), when the target matches no charger or the image is unknown; 409 "
    "(`campaign-overlap`) when a targeted charger is in another active campaign.",
    responses=problem_responses(401, 403, 409, 422),
)
async def create_campaign(
    body: CampaignCreate, request: Request, response: Response, backend: BackendDep, _: Operator
) -> CampaignOut:
    operations = backend.operations
    assert operations is not None
    try:
        image = await operations.catalog.get(body.firmware_id)
    except FirmwareNotFoundError as exc:
        raise Problem(
            422,
            str(exc),
            kind="firmware-not-found",
            errors=[ProblemError(pointer="/firmwareId", message="not in the firmware catalog")],
        ) from exc
    try:
        targets = await resolve(backend.registry, backend.shadows, body.target)
    except TargetError as exc:
        raise Problem(
            422,
            str(exc),
            kind="invalid-target",
            errors=[ProblemError(pointer="/target", message=str(exc))],
        ) from exc
    if not targets:
        raise Problem(422, "no registered charger matches the target", kind="empty-target")
    unfit = {t.charger_id: why for t in targets if (why := _unfit(t, image.vendor, image.model))}
    if unfit and not body.skip_incompatible:
        raise Problem(
            422,
            f"firmware {image.vendor} {image.model} {image.version} does not fit "
            f"{len(unfit)} targeted charger(s); nothing ever sends firmware to a charger whose "
            "vendor / model it doesn't fit (set skipIncompatible to leave them out)",
            kind="firmware-does-not-fit",
            title="Firmware does not fit the charger",
            errors=[
                ProblemError(pointer="/target", message=f"{cid}: {why}")
                for cid, why in list(unfit.items())[:100]
            ],
        )
    excluded = [Excluded(id=cid, reason=why) for cid, why in unfit.items()]
    excluded += [
        Excluded(id=t.charger_id, reason=f"it already runs {image.version}")
        for t in targets
        if t.charger_id not in unfit and t.firmware_version == image.version
    ]
    left_out = {e.id for e in excluded}
    campaign_id = new_campaign_id()
    rollout = phase_order(
        campaign_id, [t.charger_id for t in targets if t.charger_id not in left_out]
    )
    sizes = phase_sizes(len(rollout), body.canary, body.waves) if rollout else []
    assignments = [Assignment(e.id, EXCLUDED_PHASE, SKIPPED, e.reason) for e in excluded]
    start = 0
    for index, size in enumerate(sizes):
        assignments += [Assignment(cid, index) for cid in rollout[start : start + size]]
        start += size
    store = _store(backend)
    conflicts = await store.conflicts(rollout)
    try:
        if conflicts:
            raise CampaignConflictError(conflicts)
        now = time.time()
        window = body.window
        campaign = Campaign(
            campaign_id=campaign_id,
            name=body.name,
            image_id=image.image_id,
            vendor=image.vendor,
            model=image.model,
            version=image.version,
            target=body.target.model_dump(by_alias=True, exclude_none=True),
            policy=Policy(
                success_threshold=body.success_threshold,
                failure_threshold=body.failure_threshold,
                max_concurrent=body.max_concurrent,
                retries=body.retries,
                only_idle=body.only_idle,
                attempt_timeout_s=body.attempt_timeout_s,
                window=None
                if window is None
                else Window(window.cron, window.timezone, window.duration_minutes * 60.0),
            ),
            phases=sizes,
            state=RUNNING,
            phase=0,
            reason=None,
            created_at=now,
            updated_at=now,
        )
        await store.create(campaign, assignments)
    except CampaignConflictError as exc:
        raise Problem(
            409,
            str(exc),
            kind="campaign-overlap",
            errors=[
                ProblemError(pointer="/target", message=f"{cid}: in campaign {other}")
                for cid, other in sorted(exc.conflicts.items())[:100]
            ],
        ) from exc
    log.info(
        "campaign %s created: %s %s %s on %d charger(s) in %d phase(s), %d excluded",
        campaign_id,
        image.vendor,
        image.model,
        image.version,
        len(rollout),
        len(sizes),
        len(excluded),
    )
    response.headers["Location"] = f"/api/v1/campaigns/{campaign_id}"
    _wake(request)
    return await campaign_out(store, campaign, excluded)


@router.get(
    "",
    response_model=list[CampaignOut],
    response_model_by_alias=True,
    summary="List campaigns",
    description="Viewer. Oldest first; `state` filters.",
    responses=problem_responses(401, 403, 422),
)
async def list_campaigns(
    backend: BackendDep,
    _: Viewer,
    state: Annotated[Literal["running", "paused", "completed", "cancelled"] | None, Query()] = None,
) -> list[CampaignOut]:
    store = _store(backend)
    campaigns = await store.list((state,) if state else CAMPAIGN_STATES)
    return [await campaign_out(store, c) for c in campaigns]


@router.get(
    "/{campaign_id}",
    response_model=CampaignOut,
    response_model_by_alias=True,
    summary="A campaign with its progress",
    description="Viewer. Counts per state, overall and per phase.",
    responses=problem_responses(401, 403, 404),
)
async def get_campaign(campaign_id: str, backend: BackendDep, _: Viewer) -> CampaignOut:
    store = _store(backend)
    return await campaign_out(store, await _find(store, campaign_id))


@router.get(
    "/{campaign_id}/chargers",
    response_model=ChargerProgressPage,
    response_model_by_alias=True,
    summary="Per-charger progress of a campaign",
    description="Viewer. Filter by `state` and `phase` (-1: excluded at creation).",
    responses=problem_responses(401, 403, 404, 422),
)
async def campaign_chargers(
    campaign_id: str,
    backend: BackendDep,
    _: Viewer,
    state: Annotated[str | None, Query(pattern="^(" + "|".join(CHARGER_STATES) + ")$")] = None,
    phase: Annotated[int | None, Query(ge=-1, le=100)] = None,
    limit: Annotated[int, page_limit(10_000)] = 100,
    offset: Offset = 0,
) -> ChargerProgressPage:
    store = _store(backend)
    await _find(store, campaign_id)
    rows = await store.chargers(
        campaign_id,
        states=(state,) if state else None,
        phase=phase,
        limit=limit,
        offset=offset,
    )
    return ChargerProgressPage(
        items=[ChargerProgressOut.model_validate(r.as_dict()) for r in rows],
        limit=limit,
        offset=offset,
    )


def _not_now(campaign: Campaign, action: str) -> Problem:
    return Problem(
        409,
        f"campaign {campaign.campaign_id} is {campaign.state}; it cannot be {action}",
        kind="campaign-state",
    )


@router.post(
    "/{campaign_id}/pause",
    response_model=CampaignOut,
    response_model_by_alias=True,
    summary="Pause a campaign",
    description="Operator. No new update starts; those in flight are still followed. 409 "
    "unless running.",
    responses=problem_responses(401, 403, 404, 409),
)
async def pause_campaign(campaign_id: str, backend: BackendDep, _: Operator) -> CampaignOut:
    store = _store(backend)
    campaign = await _find(store, campaign_id)
    if not await store.set_state(campaign_id, PAUSED, old=(RUNNING,), reason="paused by operator"):
        raise _not_now(campaign, "paused")
    log.info("campaign %s paused by operator", campaign_id)
    return await campaign_out(store, await store.get(campaign_id))


@router.post(
    "/{campaign_id}/resume",
    response_model=CampaignOut,
    response_model_by_alias=True,
    summary="Resume a paused campaign",
    description="Operator. Failed chargers are queued again with fresh retries (`failed: "
    "retry`, the default) or skipped (`failed: skip`). 409 unless paused.",
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def resume_campaign(
    campaign_id: str,
    request: Request,
    backend: BackendDep,
    _: Operator,
    body: Resume | None = None,
) -> CampaignOut:
    store = _store(backend)
    campaign = await _find(store, campaign_id)
    if campaign.state != PAUSED:
        raise _not_now(campaign, "resumed")
    if body is None or body.failed == "retry":
        again = await store.requeue(campaign_id, (FAILED,), "queued again on resume")
    else:
        again = await store.settle(campaign_id, (FAILED,), SKIPPED, "failed; skipped on resume")
    if not await store.set_state(campaign_id, RUNNING, old=(PAUSED,)):
        raise _not_now(await store.get(campaign_id), "resumed")
    log.info("campaign %s resumed (%d failed charger(s) %s)", campaign_id, again, body)
    _wake(request)
    return await campaign_out(store, await store.get(campaign_id))


@router.post(
    "/{campaign_id}/cancel",
    response_model=CampaignOut,
    response_model_by_alias=True,
    summary="Cancel a campaign",
    description="Operator. Chargers not yet installed become `cancelled`; the engine then "
    "removes the campaign's `desired.firmware` key from every charger it asked and that has "
    "not installed it (an update already running on a charger cannot be stopped, OCPP 1.6 "
    "has no such call), and releases the chargers for other campaigns. 409 unless active.",
    responses=problem_responses(401, 403, 404, 409),
)
async def cancel_campaign(
    campaign_id: str, request: Request, backend: BackendDep, _: Operator
) -> CampaignOut:
    store = _store(backend)
    campaign = await _find(store, campaign_id)
    if not await store.set_state(
        campaign_id, CANCELLED, old=ACTIVE, reason="cancelled by operator"
    ):
        raise _not_now(campaign, "cancelled")
    await store.settle(campaign_id, (QUEUED, *IN_FLIGHT), CANCELLED, "campaign cancelled")
    log.info("campaign %s cancelled by operator", campaign_id)
    _wake(request)
    return await campaign_out(store, await store.get(campaign_id))
