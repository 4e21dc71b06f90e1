"""Sites over HTTP: a site's desired energy state and what the allocator reported for it.

Viewers read; operators change the desired energy state with a JSON merge patch
(``If-Match`` makes it conditional, as for shadows). The leading ``fleet`` process
recomputes at once (``{prefix}/fleet/wake``, engine ``energy``). Every change is audited
under the chargerId ``site:<site>`` (no charger id holds a colon), action ``site.energy``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from jsonschema import Draft202012Validator
from pydantic import BaseModel, Field

from api.auth import Operator, Viewer
from api.backends import Backend, get_backend
from api.params import Moment
from api.problems import Problem, ProblemError, problem_responses
from api.routes.maintenance import epoch
from api.routes.monitoring import series_of
from api.routes.shadows import (
    MERGE_PATCH_MEDIA_TYPES,
    _if_match_schema,
    etag,
    merge_patch_schema,
    parse_if_match,
    read_merge_patch,
)
from chargetwin.audit import Outcome
from fleet.site_load import load_curve, parse_step
from fleet.sites import (
    ENERGY_SCHEMA,
    SiteNotFound,
    SiteStore,
    VersionConflict,
    energy_errors,
    limit_at,
    merge_patch,
)
from rules.points import Selection

router = APIRouter(prefix="/sites", tags=["sites"])

BackendDep = Annotated[Backend, Depends(get_backend)]
SiteId = Annotated[str, Path(min_length=1, max_length=100, description="The site's name.")]
ACTION = "site.energy"
DEFAULT_LOAD_S = 86400.0


class SiteSummary(BaseModel):
    id: str
    chargers: int = Field(description="Chargers registered with this site.")
    version: int = Field(description="Version of the desired energy state (0: never set).")
    limitA: float | None = Field(description="The limit holding now, A per phase.")
    loadA: float | None = Field(description="Measured load at the last pass, A per phase.")
    headroomA: float | None = Field(
        description="Limit minus what is counted (measured or at rated for missing information)."
    )
    lastBreach: dict[str, Any] | None = Field(
        description="`{at, amountA, limitA}` of the last pass that measured more than the limit."
    )


class SiteOut(BaseModel):
    id: str
    chargers: list[str]
    desired: dict[str, Any] = Field(description="The desired energy state (docs/sites.md).")
    version: int
    updatedAt: datetime | None
    updatedBy: str | None
    limitNow: dict[str, Any] = Field(
        description="`{limitA, window, nextEdge}`: the limit the schedule gives now."
    )
    reported: dict[str, Any] | None = Field(
        description="The allocator's last pass: `limitA`, `window`, `loadA`, `loadKW`, "
        "`unknownLoad`, `fixedA`, `countedA`, `headroomA`, `paused`, `lastBreach` and per "
        "connector (`charger/connector`) its state, rated, target, written limit, "
        "confirmed limit, measured and counted current. None before the first pass."
    )


class EnergyUpdateOut(BaseModel):
    version: int
    desired: dict[str, Any]


def sites_of(backend: Backend) -> SiteStore:
    if backend.sites is None:
        raise Problem(503, "sites are not available in this deployment", kind="unavailable")
    return backend.sites


def _at(moment: float) -> datetime:
    return datetime.fromtimestamp(moment, UTC)


def _iso(moment: float | None) -> datetime | None:
    return None if moment is None else datetime.fromtimestamp(moment, UTC)


@router.get(
    "",
    response_model=list[SiteSummary],
    summary="List sites",
    description="Viewer. Every site a charger names or that has an energy state, by name.",
    responses=problem_responses(401, 403),
)
async def list_sites(backend: BackendDep, _: Viewer) -> list[SiteSummary]:
    sites = sites_of(backend)
    energies = await sites.all_energy()
    reports = await sites.reports()
    chargers = await sites.chargers_by_site()
    out = []
    for name in await sites.names():
        report = reports.get(name) or {}
        energy = energies.get(name)
        out.append(
            SiteSummary(
                id=name,
                chargers=len(chargers.get(name, [])),
                version=energy.version if energy else 0,
                limitA=report.get("limitA"),
                loadA=report.get("loadA"),
                headroomA=report.get("headroomA"),
                lastBreach=report.get("lastBreach"),
            )
        )
    return out


async def _site_out(backend: Backend, site: str) -> SiteOut:
    sites = sites_of(backend)
    try:
        energy = await sites.energy(site)
    except SiteNotFound as exc:
        raise Problem(404, str(exc), kind="site-not-found") from exc
    now = limit_at(energy.desired, datetime.now(UTC).timestamp())
    return SiteOut(
        id=site,
        chargers=[c for c, _ in await sites.chargers(site)],
        desired=energy.desired,
        version=energy.version,
        updatedAt=_iso(energy.updated_at),
        updatedBy=energy.updated_by,
        limitNow={"limitA": now.amps, "window": now.window, "nextEdge": _iso(now.next_edge)},
        reported=await sites.report(site),
    )


@router.get(
    "/{site}",
    response_model=SiteOut,
    summary="Get a site",
    description="Viewer. Its chargers, desired energy state and the allocator's last report.",
    responses={
        200: {"headers": {"ETag": {"description": "The desired state's version, quoted."}}},
        **problem_responses(401, 403, 404),
    },
)
async def get_site(site: SiteId, response: Response, backend: BackendDep, _: Viewer) -> SiteOut:
    out = await _site_out(backend, site)
    response.headers["ETag"] = etag(out.version)
    return out


_PATCH_SCHEMA = {**merge_patch_schema(ENERGY_SCHEMA), "title": "Energy state merge patch"}
_PATCH_VALIDATOR = Draft202012Validator(_PATCH_SCHEMA)


def _pointer(path: Iterable[Any]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


_PATCH_BODY = {
    "required": True,
    "description": "A JSON merge patch (RFC 7396) of the desired energy state.",
    "content": {
        media_type: {
            "schema": _PATCH_SCHEMA,
            "example": {
                "limitA": 100,
                "strategy": "equal",
                "failsafeA": 10,
                "schedule": [
                    {
                        "name": "evening peak",
                        "cron": "0 17 * * 1-5",
                        "durationMinutes": 180,
                        "timezone": "Europe/Berlin",
                        "limitA": 60,
                    }
                ],
            },
        }
        for media_type in MERGE_PATCH_MEDIA_TYPES
    },
}


@router.patch(
    "/{site}/energy",
    response_model=EnergyUpdateOut,
    summary="Change a site's desired energy state",
    description="Operator. The patch is merged into the current desired energy state and the "
    'result validated (422 with JSON pointers when invalid). `If-Match: "<version>"` makes '
    "the change conditional (412 when stale). The allocator recomputes the site at once.",
    openapi_extra={"requestBody": _PATCH_BODY},
    responses={
        200: {"headers": {"ETag": {"description": "The new version, quoted."}}},
        **problem_responses(400, 401, 403, 404, 412, 413, 415, 422),
    },
)
async def patch_energy(
    site: SiteId,
    request: Request,
    response: Response,
    backend: BackendDep,
    principal: Operator,
    if_match: Annotated[
        str | None,
        Header(
            description='Only apply at this version: "3" (or *).',
            json_schema_extra=_if_match_schema,
        ),
    ] = None,
) -> EnergyUpdateOut:
    expected = parse_if_match(if_match)
    patch = await read_merge_patch(request)
    sites = sites_of(backend)

    async def record(outcome: Outcome, status: int, detail: str | None = None,
                     version: int | None = None) -> None:  # fmt: skip
        await backend.audit.record(
            actor=principal.name, actor_id=principal.token_id, role=principal.role.value,
            charger_id=f"site:{site}", action=ACTION, patch=patch, outcome=outcome,
            status=status, version=version, detail=detail,
        )  # fmt: skip

    try:
        current = await sites.energy(site)
    except SiteNotFound as exc:
        raise Problem(404, str(exc), kind="site-not-found") from exc
    # The patch itself must be what the OpenAPI document says: an unknown key with an
    # empty object would merge into nothing and pass the merged state's check unseen.
    shape_errors = [
        (_pointer(error.absolute_path), error.message)
        for error in sorted(
            _PATCH_VALIDATOR.iter_errors(patch), key=lambda e: [str(p) for p in e.absolute_path]
        )
    ]
    if shape_errors:
        # With what the merged state's own check says, so each problem is named once.
        merged = energy_errors(merge_patch(current.desired, patch))
        shape_errors += [e for e in merged if e not in shape_errors]
        await record(Outcome.INVALID, 422, "; ".join(f"{p}: {m}" for p, m in shape_errors))
        raise Problem(
            422,
            "the body is not a merge patch of the energy state",
            kind="invalid-energy-state",
            title="Invalid energy state",
            errors=[ProblemError(pointer=p, message=m) for p, m in shape_errors],
        )
    if expected == "*":  # any version, as long as the state exists
        expected = current.version if current.version > 0 else -1
    try:
        energy, errors = await sites.patch_energy(
            site,
            patch,
            actor=principal.name,
            expected_version=int(expected) if expected is not None else None,
        )
    except VersionConflict as exc:
        await record(Outcome.PRECONDITION_FAILED, 412, str(exc))
        raise Problem(
            412, str(exc), kind="precondition-failed", headers={"ETag": etag(current.version)}
        ) from exc
    if errors:
        await record(Outcome.INVALID, 422, "; ".join(f"{p}: {m}" for p, m in errors))
        raise Problem(
            422,
            "the desired energy state after the patch is not valid",
            kind="invalid-energy-state",
            title="Invalid energy state",
            errors=[ProblemError(pointer=p, message=m) for p, m in errors],
        )
    await record(Outcome.ACCEPTED, 200, version=energy.version)
    backend.wake_fleet("energy")
    response.headers["ETag"] = etag(energy.version)
    return EnergyUpdateOut(version=energy.version, desired=energy.desired)


class LoadStep(BaseModel):
    at: datetime
    kW: float


class SiteLoadOut(BaseModel):
    site: str
    start: datetime = Field(alias="from")
    end: datetime = Field(alias="to")
    step: str
    steps: list[LoadStep] = Field(
        description="Per step from `from`: the mean power of each connector over the step, "
        "summed over the site's connectors."
    )
    peak: LoadStep | None = Field(description="The step with the highest load (None: no load).")
    limitA: float | None = Field(description="The site's limit now (A per phase).")


@router.get(
    "/{site}/load",
    response_model=SiteLoadOut,
    response_model_by_alias=True,
    summary="A site's load over time",
    description="Viewer. kW per `step` (default 15m; m, h or d; at most 5000 steps) over "
    "`[from, to)` (default: the last 24 hours), from the recorded `Power.Active.Import` "
    "meter values of the site's chargers, with the peak and when it was.",
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def get_site_load(
    site: SiteId,
    backend: BackendDep,
    _: Viewer,
    start: Annotated[Moment | None, Query(alias="from")] = None,
    end: Annotated[Moment | None, Query(alias="to")] = None,
    step: Annotated[str, Query(max_length=10, description="15m, 1h, 1d ...")] = "15m",
) -> SiteLoadOut:
    sites = sites_of(backend)
    try:
        energy = await sites.energy(site)
    except SiteNotFound as exc:
        raise Problem(404, str(exc), kind="site-not-found") from exc
    try:
        step_s = parse_step(step)
    except ValueError as exc:
        error = ProblemError(parameter="step", message=str(exc))
        raise Problem(422, str(exc), errors=[error]) from exc
    hi = epoch(end) if end is not None else datetime.now(UTC).timestamp()
    lo = epoch(start) if start is not None else hi - DEFAULT_LOAD_S
    if hi <= lo:
        error = ProblemError(parameter="to", message="must be after from")
        raise Problem(422, "`to` must be after `from`", errors=[error])
    selection = Selection(
        "meter_values",
        "value",
        filters={"site": (site,), "measurand": ("Power.Active.Import",), "phase": ("",)},
        group_by=("charger", "connector", "unit"),
    )
    async with series_of(backend) as store:
        series = await store.points(selection, int(lo * 1e9) - 1, int(hi * 1e9) - 1)
    try:
        curve = load_curve(series, lo, hi, step_s)
    except ValueError as exc:
        error = ProblemError(parameter="step", message=str(exc))
        raise Problem(422, str(exc), errors=[error]) from exc
    peak = curve["peak"]
    return SiteLoadOut.model_validate(
        {
            "site": site,
            "from": _at(lo),
            "to": _at(hi),
            "step": step,
            "steps": [LoadStep(at=_at(s["at"]), kW=s["kW"]) for s in curve["steps"]],
            "peak": None if peak is None else LoadStep(at=_at(peak["at"]), kW=peak["kW"]),
            "limitA": limit_at(energy.desired, hi).amps,
        }
    )
