"""Configuration profiles over HTTP: manage them, apply them to chargers, report drift.

Applying publishes one desired-state merge per charger through the twin (the API never
writes shadows itself), a bounded number at a time, and logs progress per batch; the
answer counts what the twin accepted and lists what it refused.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Response, status
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from api.auth import Operator, Viewer
from api.backends import Backend, get_backend
from api.problems import Problem, ProblemError, problem_responses
from chargetwin.shadow_client import ShadowRequestError
from fleet.profiles import (
    DRIFT_REASONS,
    Profile,
    ProfileExistsError,
    ProfileNotFoundError,
    ProfileStore,
    drift,
    keys_for,
    ocpp_version,
)
from fleet.targets import Target, TargetError, documents, resolve
from twin.schemas import desired_errors

log = logging.getLogger(__name__)

router = APIRouter(prefix="/profiles", tags=["profiles"])

BackendDep = Annotated[Backend, Depends(get_backend)]
NamePath = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]
APPLY_BATCH = 200
APPLY_CONCURRENCY = 32


class _Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class ProfileIn(_Wire):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        json_schema_extra={
            "example": {
                "description": "Depot chargers: fast heartbeats, meter values every minute",
                "config": {
                    "HeartbeatInterval": "60",
                    "MeterValueSampleInterval": "60",
                    "OCPPCommCtrlr/HeartbeatInterval": "60",
                    "SampledDataCtrlr/TxUpdatedInterval": "60",
                },
                "target": {"site": "Depot-North"},
            }
        },
    )

    description: str | None = Field(None, max_length=1000)
    config: dict[str, str] = Field(
        min_length=1,
        max_length=200,
        description="Desired configuration. OCPP 1.6 keys and 2.0.1 `COMPONENT/VARIABLE` "
        "keys may be mixed: each charger takes the keys of its version.",
    )
    target: Target | None = Field(None, description="Default chargers for apply and drift.")

    @field_validator("config")
    @classmethod
    def _valid_config(cls, value: dict[str, str]) -> dict[str, str]:
        errors = desired_errors({"config": value})
        if errors:
            raise ValueError("; ".join(f"{pointer}: {message}" for pointer, message in errors))
        return value


class ProfileCreate(ProfileIn):
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")


class ProfileOut(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    name: str
    description: str | None
    config: dict[str, str]
    target: dict[str, Any] | None
    created_at: float
    updated_at: float


class ApplyIn(_Wire):
    target: Target | None = Field(None, description="Instead of the profile's own target.")


class ApplyFailure(BaseModel):
    id: str
    reason: str


class ApplyOut(BaseModel):
    profile: str
    total: int
    applied: int
    failed: list[ApplyFailure]
    batches: int


class ChargerDrift(BaseModel):
    id: str
    online: bool
    keys: list[dict[str, Any]]


class DriftOut(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    profile: str
    total: int = Field(description="Chargers checked.")
    in_sync: int = Field(description="Chargers reporting every key of the profile.")
    counts: dict[str, int] = Field(description="Drifting keys per reason.")
    chargers: list[ChargerDrift]


def _store(backend: Backend) -> ProfileStore:
    return ProfileStore(backend.db)


def _out(profile: Profile) -> ProfileOut:
    return ProfileOut.model_validate(profile.as_dict())


async def _find(store: ProfileStore, name: str) -> Profile:
    try:
        return await store.get(name)
    except ProfileNotFoundError as exc:
        raise Problem(404, str(exc), kind="profile-not-found") from exc


async def _targets(backend: Backend, profile: Profile, target: Target | None) -> list[str]:
    if target is None:
        if profile.target is None:
            raise Problem(
                422,
                f"profile {profile.name!r} has no target; give one",
                kind="invalid-target",
                errors=[ProblemError(pointer="/target", message="required")],
            )
        target = Target.model_validate(profile.target)
    try:
        return [t.charger_id for t in await resolve(backend.registry, backend.shadows, target)]
    except TargetError as exc:
        raise Problem(
            422,
            str(exc),
            kind="invalid-target",
            errors=[ProblemError(pointer="/target", message=str(exc))],
        ) from exc


def _target_json(target: Target | None) -> dict[str, Any] | None:
    return None if target is None else target.model_dump(by_alias=True, exclude_none=True)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ProfileOut,
    response_model_by_alias=True,
    summary="Create a configuration profile",
    description="Operator. 409 when the name is taken; 422 for keys or values the desired "
    "state schema refuses.",
    responses=problem_responses(401, 403, 409, 422),
)
async def create_profile(
    body: ProfileCreate, response: Response, backend: BackendDep, _: Operator
) -> ProfileOut:
    try:
        profile = await _store(backend).create(
            body.name, body.config, description=body.description, target=_target_json(body.target)
        )
    except ProfileExistsError as exc:
        raise Problem(409, str(exc), kind="profile-exists") from exc
    response.headers["Location"] = f"/api/v1/profiles/{profile.name}"
    return _out(profile)


@router.get(
    "",
    response_model=list[ProfileOut],
    response_model_by_alias=True,
    summary="List configuration profiles",
    description="Viewer.",
    responses=problem_responses(401, 403),
)
async def list_profiles(backend: BackendDep, _: Viewer) -> list[ProfileOut]:
    return [_out(p) for p in await _store(backend).list()]


@router.get(
    "/{name}",
    response_model=ProfileOut,
    response_model_by_alias=True,
    summary="A configuration profile",
    description="Viewer.",
    responses=problem_responses(401, 403, 404, 422),
)
async def get_profile(name: NamePath, backend: BackendDep, _: Viewer) -> ProfileOut:
    return _out(await _find(_store(backend), name))


@router.put(
    "/{name}",
    response_model=ProfileOut,
    response_model_by_alias=True,
    summary="Create or replace a configuration profile",
    description="Operator. Chargers are not changed until the profile is applied again. "
    "200 when it replaced a profile, 201 when it created one.",
    responses={
        201: {"description": "Created", "model": ProfileOut},
        **problem_responses(401, 403, 422),
    },
)
async def put_profile(
    name: NamePath, body: ProfileIn, response: Response, backend: BackendDep, _: Operator
) -> ProfileOut:
    profile, created = await _store(backend).put(
        name, body.config, description=body.description, target=_target_json(body.target)
    )
    if created:
        response.status_code = status.HTTP_201_CREATED
    return _out(profile)


@router.delete(
    "/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a configuration profile",
    description="Operator. The desired configuration it put on chargers stays.",
    responses=problem_responses(401, 403, 404, 422),
)
async def delete_profile(name: NamePath, backend: BackendDep, _: Operator) -> Response:
    try:
        await _store(backend).delete(name)
    except ProfileNotFoundError as exc:
        raise Problem(404, str(exc), kind="profile-not-found") from exc
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{name}/apply",
    response_model=ApplyOut,
    summary="Apply a profile to chargers",
    description="Operator. Merges the profile's keys of each target's OCPP version (1.6 "
    "keys, or 2.0.1 `COMPONENT/VARIABLE` keys; all while the version is not known) into its "
    f"`desired.config` through the twin, {APPLY_BATCH} chargers per batch. Idempotent: "
    "applying again changes nothing the chargers already have.",
    responses=problem_responses(401, 403, 404, 422),
)
async def apply_profile(
    name: NamePath, backend: BackendDep, _: Operator, body: ApplyIn | None = None
) -> ApplyOut:
    profile = await _find(_store(backend), name)
    charger_ids = await _targets(backend, profile, body.target if body else None)
    failed: list[ApplyFailure] = []
    limit = asyncio.Semaphore(APPLY_CONCURRENCY)
    docs: dict[str, dict[str, Any]] = {}

    async def one(charger_id: str) -> None:
        # The keys of the charger's OCPP version (all of them while it is not known).
        config = keys_for(profile.config, ocpp_version(docs.get(charger_id)))
        if not config:
            return  # nothing in the profile for this version: nothing to change
        async with limit:
            try:
                await backend.shadow_client.update(charger_id, {"desired": {"config": config}})
            except ShadowRequestError as exc:
                log.warning("%s: profile %s not applied: %s", charger_id, name, exc)
                failed.append(ApplyFailure(id=charger_id, reason=str(exc)))

    batches = 0
    for start in range(0, len(charger_ids), APPLY_BATCH):
        batch = charger_ids[start : start + APPLY_BATCH]
        docs = await documents(backend.db, batch)
        async with asyncio.TaskGroup() as tg:
            for charger_id in batch:
                tg.create_task(one(charger_id), name=f"profile-apply-{charger_id}")
        batches += 1
        log.info("profile %s: %d/%d chargers done", name, start + len(batch), len(charger_ids))
    return ApplyOut(
        profile=name,
        total=len(charger_ids),
        applied=len(charger_ids) - len(failed),
        failed=sorted(failed, key=lambda f: f.id),
        batches=batches,
    )


@router.get(
    "/{name}/drift",
    response_model=DriftOut,
    response_model_by_alias=True,
    summary="Chargers whose reported configuration differs from the profile",
    description="Viewer. Per drifting charger and key: `refused` (with the charger's "
    "status), `not-applied` (desired lacks the value), `offline`, or `pending` (desired "
    "set, online, not reported yet). Uses the profile's target.",
    responses=problem_responses(401, 403, 404, 422),
)
async def profile_drift(name: NamePath, backend: BackendDep, _: Viewer) -> DriftOut:
    profile = await _find(_store(backend), name)
    charger_ids = await _targets(backend, profile, None)
    docs = await documents(backend.db, charger_ids)
    counts: Counter[str] = Counter(dict.fromkeys(DRIFT_REASONS, 0))
    drifting = []
    for charger_id in charger_ids:
        document = docs.get(charger_id)
        keys = drift(document, profile.config)
        if not keys:
            continue
        counts.update(k.reason for k in keys)
        connection = ((document or {}).get("state", {}).get("reported") or {}).get("connection")
        online = bool(connection.get("online")) if isinstance(connection, dict) else False
        drifting.append(
            ChargerDrift(id=charger_id, online=online, keys=[k.as_dict() for k in keys])
        )
    return DriftOut(
        profile=name,
        total=len(charger_ids),
        in_sync=len(charger_ids) - len(drifting),
        counts=dict(counts),
        chargers=drifting,
    )
