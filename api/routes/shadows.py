"""A charger's shadow: read it, and change its desired state with a JSON merge patch.

The API never writes the shadow store. A desired change is validated here (the current
desired state merged with the patch per RFC 7396, checked against the desired-state
schema), then sent to the twin as a ``shadow/update`` over MQTT; the twin's answer
decides the response, and every outcome goes to the audit log.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response

from api.auth import Operator, Principal, Viewer
from api.backends import Backend, get_backend
from api.models import DesiredUpdateOut, ShadowDocumentOut
from api.patches import merge_patch
from api.problems import Problem, ProblemError, problem_responses
from api.routes.chargers import find_charger
from api.routes.firmware import desired_firmware_problem
from chargetwin.audit import Outcome
from chargetwin.json_text import JsonTextError, parse_json
from chargetwin.shadow_client import (
    ShadowExpiredError,
    ShadowRequestError,
    ShadowTimeoutError,
)
from twin.devicemodel import config_problems
from twin.schemas import DESIRED_SCHEMA, desired_errors

router = APIRouter(prefix="/chargers/{charger_id}/shadow", tags=["shadows"])

BackendDep = Annotated[Backend, Depends(get_backend)]

MERGE_PATCH_MEDIA_TYPES = ("application/merge-patch+json", "application/json")
PATCH_ACTION = "desired.patch"
# A strong entity tag (RFC 9110 section 8.8.3); the bare version too, as some HTTP clients
# send it unquoted and it cannot mean anything else.
_ETAG = re.compile(r'"([0-9]{1,18})"|([0-9]{1,18})')
IF_MATCH_PATTERN = r'^(\*|"[0-9]{1,18}"|[0-9]{1,18})$'


def etag(version: int) -> str:
    return f'"{version}"'


def empty_document() -> dict[str, Any]:
    """What a registered charger's shadow looks like before anything was reported."""
    return {
        "state": {"reported": {}, "desired": {}},
        "metadata": {"reported": {}, "desired": {}},
        "version": 0,
        "timestamp": 0.0,
    }


@router.get(
    "",
    response_model=ShadowDocumentOut,
    response_model_exclude_none=True,
    summary="Get a charger's shadow",
    description="Viewer. The whole document: reported, desired and delta state, per-leaf "
    "metadata, version. The `ETag` header carries the version for `If-Match`.",
    responses={
        200: {
            "headers": {
                "ETag": {"description": 'The version, quoted: "7"', "schema": {"type": "string"}}
            }
        },
        **problem_responses(401, 403, 404),
    },
)
async def get_shadow(
    charger_id: str, backend: BackendDep, _: Viewer, response: Response
) -> dict[str, Any]:
    await find_charger(backend, charger_id)
    document = await backend.shadows.get_document(charger_id) or empty_document()
    response.headers["ETag"] = etag(int(document["version"]))
    return document


def _if_match_schema(schema: dict[str, Any]) -> None:
    """A header is text or absent, never JSON null: document it so, with its pattern (which
    parse_if_match checks itself, to answer 400 as RFC 9110 section 13.1.1 wants)."""
    description = schema.get("description")
    schema.clear()
    schema.update(type="string", pattern=IF_MATCH_PATTERN, title="If-Match")
    if description:
        schema["description"] = description


def parse_if_match(value: str | None) -> int | str | None:
    """The version ``If-Match`` requires, ``"*"``, or None when the header is absent."""
    if value is None:
        return None
    value = value.strip()
    if value == "*":
        return "*"
    match = _ETAG.fullmatch(value)
    if match is None:
        # Weak tags never match under If-Match's strong comparison (RFC 9110 13.1.1).
        raise Problem(
            400,
            'If-Match must be one strong ETag such as "7", or *',
            kind="bad-if-match",
            errors=[ProblemError(header="If-Match", message=f"unsupported value {value!r}")],
        )
    return int(match.group(1) or match.group(2))


async def read_merge_patch(request: Request) -> dict[str, Any]:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in MERGE_PATCH_MEDIA_TYPES:
        raise Problem(
            415,
            "send the patch as application/merge-patch+json (or application/json)",
            kind="unsupported-media-type",
            headers={"Accept-Patch": "application/merge-patch+json"},
        )
    try:
        patch = parse_json(await request.body())
    except JsonTextError as exc:
        raise Problem(
            400, f"the body is not valid JSON: {exc}", kind="malformed-json", title="Malformed JSON"
        ) from exc
    if not isinstance(patch, dict):
        raise Problem(
            422,
            "a desired-state merge patch must be a JSON object",
            kind="invalid-patch",
            errors=[ProblemError(pointer="", message=f"got a JSON {type(patch).__name__}")],
        )
    return patch


def merge_patch_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema of a merge patch (RFC 7396) of documents valid under ``schema``:
    the same members, none required, each one also ``null`` (which deletes it)."""
    out = {k: v for k, v in schema.items() if k not in ("$schema", "$id", "required", "title")}
    if "properties" in out:
        out["properties"] = {
            name: _or_null(merge_patch_schema(member)) for name, member in out["properties"].items()
        }
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = _or_null(merge_patch_schema(out["additionalProperties"]))
    return out


def _or_null(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


_PATCH_BODY = {
    "required": True,
    "description": "A JSON merge patch (RFC 7396) of the desired state: objects merge, "
    "`null` deletes a key, arrays and scalars replace.",
    "content": {
        media_type: {
            "schema": {
                **merge_patch_schema(DESIRED_SCHEMA),
                "title": "Desired-state merge patch",
                "description": "Keys as in the desired state (`config`, `availability`, "
                "`firmware`); any value may be `null` to delete it. The merged result must "
                "match the desired-state schema (`twin/schemas.py`).",
            },
            "example": {
                "config": {"HeartbeatInterval": "300", "MeterValueSampleInterval": None},
                "availability": {"2": "Inoperative"},
            },
        }
        for media_type in MERGE_PATCH_MEDIA_TYPES
    },
}


@router.patch(
    "/desired",
    response_model=DesiredUpdateOut,
    summary="Change a charger's desired state",
    description="Operator. The patch is merged into the current desired state and the "
    "result validated (422 with JSON pointers when invalid), then sent to the twin. "
    "For an OCPP 2.0.1 station, a `config` value the device model in the shadow "
    "(`reported.deviceModel`) refuses is a 422 too (`device-model-refuses`: a ReadOnly "
    "variable, a value not of its dataType, outside minLimit..maxLimit or not in its "
    "valuesList, a key outside the COMPONENT/VARIABLE scheme). "
    '`If-Match: "<version>"` makes the change conditional (412 when stale). '
    "504 when the twin does not answer in time; the change is then never applied later "
    "(the request carries a deadline the twin honours).",
    openapi_extra={"requestBody": _PATCH_BODY},
    responses={
        200: {
            "headers": {
                "ETag": {"description": "The new version, quoted.", "schema": {"type": "string"}}
            }
        },
        **problem_responses(400, 401, 403, 404, 409, 412, 413, 415, 422, 502, 504),
    },
)
async def patch_desired(
    charger_id: str,
    request: Request,
    response: Response,
    backend: BackendDep,
    principal: Operator,
    if_match: Annotated[
        str | None,
        Header(
            description='Only apply at this version: "7" (or *).',
            json_schema_extra=_if_match_schema,
        ),
    ] = None,
) -> DesiredUpdateOut:
    expected = parse_if_match(if_match)
    patch = await read_merge_patch(request)
    await find_charger(backend, charger_id)
    change = _Change(backend, principal, charger_id, patch)

    document = await backend.shadows.get_document(charger_id) or empty_document()
    current_version = int(document["version"])
    if (expected == "*" and current_version == 0) or (
        isinstance(expected, int) and expected != current_version
    ):
        # Checked here to spare a round trip; the twin checks again atomically below.
        stale = Problem(
            412,
            f"If-Match {if_match} does not match the current version {etag(current_version)}",
            kind="precondition-failed",
            headers={"ETag": etag(current_version)},
        )
        await change.record(Outcome.PRECONDITION_FAILED, 412, stale.detail or "")
        raise stale

    merged = merge_patch(document["state"].get("desired") or {}, patch)
    errors = desired_errors(merged)
    if errors:
        detail = "the desired state after the patch does not match the schema"
        await change.record(Outcome.INVALID, 422, "; ".join(f"{p}: {m}" for p, m in errors))
        raise Problem(
            422,
            detail,
            kind="invalid-desired-state",
            title="Invalid desired state",
            errors=[ProblemError(pointer=p, message=m) for p, m in errors],
        )

    misfit = await desired_firmware_problem(backend, document, patch)
    if misfit is not None:
        await change.record(Outcome.INVALID, 422, misfit.detail or "")
        raise misfit

    unsettable = device_model_problem(document, patch)
    if unsettable is not None:
        await change.record(Outcome.INVALID, 422, unsettable.detail or "")
        raise unsettable

    version = expected if isinstance(expected, int) else None
    try:
        answer = await backend.shadow_client.update(charger_id, {"desired": patch}, version=version)
    except ShadowExpiredError as exc:
        await change.record(Outcome.EXPIRED, 504, exc.message)
        raise Problem(
            504,
            "the twin service could not apply the change in time; it was not applied",
            kind="twin-timeout",
        ) from exc
    except ShadowTimeoutError as exc:
        await change.record(Outcome.TIMEOUT, 504, exc.message)
        raise Problem(
            504,
            "the twin service did not answer in time; the change is not applied later",
            kind="twin-timeout",
        ) from exc
    except ShadowRequestError as exc:
        problem = _twin_refusal(exc, conditional=version is not None)
        outcome = Outcome.PRECONDITION_FAILED if problem.status == 412 else Outcome.REJECTED
        await change.record(outcome, problem.status, exc.message)
        raise problem from exc

    new_version = int(answer["version"])
    after = await backend.shadows.get_document(charger_id)
    if after is not None and int(after["version"]) == new_version:
        desired = after["state"].get("desired") or {}
    else:
        desired = merged  # the store moved on (or lags); what this change produced
    await change.record(Outcome.ACCEPTED, 200, version=new_version)
    response.headers["ETag"] = etag(new_version)
    return DesiredUpdateOut(version=new_version, desired=desired)


def device_model_problem(document: dict[str, Any], patch: dict[str, Any]) -> Problem | None:
    """422 for desired ``config`` values an OCPP 2.0.1 station's device model (in the
    shadow) says cannot be set: the bridge would refuse them without sending anything."""
    config = patch.get("config")
    if not isinstance(config, dict):
        return None
    reported = (document.get("state") or {}).get("reported") or {}
    problems = config_problems(config, reported)
    if not problems:
        return None
    return Problem(
        422,
        "the station's device model does not allow "
        + "; ".join(f"{key}: {why}" for key, why in problems),
        kind="device-model-refuses",
        title="Not settable on this station",
        errors=[
            ProblemError(pointer="/desired/config/" + _pointer_part(key), message=why)
            for key, why in problems
        ],
    )


def _pointer_part(key: str) -> str:
    """One JSON pointer reference token (RFC 6901: ``~`` and ``/`` escaped)."""
    return key.replace("~", "~0").replace("/", "~1")


class _Change:
    """One desired-state change in flight, so each way it ends is audited alike."""

    def __init__(
        self, backend: Backend, principal: Principal, charger_id: str, patch: dict[str, Any]
    ) -> None:
        self.backend = backend
        self.principal = principal
        self.charger_id = charger_id
        self.patch = patch

    async def record(
        self, outcome: Outcome, status: int, detail: str | None = None, version: int | None = None
    ) -> None:
        await self.backend.audit.record(
            actor=self.principal.name,
            actor_id=self.principal.token_id,
            role=self.principal.role.value,
            charger_id=self.charger_id,
            action=PATCH_ACTION,
            patch=self.patch,
            outcome=outcome,
            status=status,
            version=version,
            detail=detail,
        )


def _twin_refusal(exc: ShadowRequestError, *, conditional: bool) -> Problem:
    """The twin's ``rejected`` codes as HTTP statuses; its 409 is our 412 under If-Match."""
    if exc.code == 409 and conditional:
        return Problem(
            412, f"the shadow changed meanwhile: {exc.message}", kind="precondition-failed"
        )
    if exc.code in (400, 404, 409, 413, 422):
        return Problem(
            exc.code, f"the twin refused the change: {exc.message}", kind="twin-rejected"
        )
    return Problem(502, f"the twin answered {exc.code}: {exc.message}", kind="twin-error")
