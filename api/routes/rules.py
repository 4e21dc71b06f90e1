"""Rules over HTTP: the loaded rules with their health, and validation of a rule file."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from api.auth import Viewer
from api.backends import Backend, get_backend
from api.problems import problem_responses
from api.routes.alerts import alert_store
from rules.files import validate_text

router = APIRouter(prefix="/rules", tags=["rules"])

BackendDep = Annotated[Backend, Depends(get_backend)]


class RuleOut(BaseModel):
    name: str
    group: str
    file: str
    line: int
    kind: str
    severity: str
    health: str
    lastError: str | None
    lastEvaluation: float | None
    evaluationSeconds: float | None
    pending: int
    firing: int
    definition: dict[str, Any]


class FindingOut(BaseModel):
    line: int
    message: str


class ValidationOut(BaseModel):
    valid: bool
    errors: list[FindingOut]


@router.get(
    "",
    response_model=list[RuleOut],
    summary="List rules and their state",
    description="Viewer. As last evaluated by the rules component: health is ok, nodata, "
    "error (with lastError) or unknown (not evaluated yet).",
    responses=problem_responses(401, 403),
)
async def list_rules(backend: BackendDep, _: Viewer) -> list[RuleOut]:
    store = await alert_store(backend.db)
    return [RuleOut.model_validate(r) for r in await store.rule_states()]


@router.post(
    "/validate",
    response_model=ValidationOut,
    summary="Validate a rule file",
    description="Viewer. The body is the YAML text of one rule file; every error comes with "
    "its line.",
    responses=problem_responses(401, 403, 413),
    openapi_extra={
        # Any text is a valid request here: the answer says whether it is a valid rule file.
        "requestBody": {
            "required": False,  # an empty body is an (invalid) empty rule file
            "content": {
                "application/yaml": {"schema": {"description": "The YAML text of a rule file."}}
            },
        }
    },
)
async def validate_rules(request: Request, backend: BackendDep, _: Viewer) -> ValidationOut:
    body = await request.body()
    findings = validate_text(body.decode("utf-8", errors="replace"), "body")
    return ValidationOut(
        valid=not findings,
        errors=[FindingOut(line=f.line, message=f.message) for f in findings],
    )
