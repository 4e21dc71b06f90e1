"""Id tags: the list behind Authorize and the idTagInfo of transactions (bridge ``id_tags``).

The bridge reads the table on every Authorize / StartTransaction, so a change here applies
to the next swipe without restarting anything. An empty table accepts every tag (a fresh
installation lets cars charge); once it holds any tag, unknown tags are ``Invalid``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Response, status
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from api.auth import Operator
from api.operations import Operations, get_operations
from api.params import Moment, Offset, page_limit
from api.problems import Problem, problem_responses

router = APIRouter(prefix="/id-tags", tags=["id tags"])

OperationsDep = Annotated[Operations, Depends(get_operations)]
# OCPP 1.6 IdToken is CiString20Type (section 7.28).
IdTagPath = Annotated[str, Path(min_length=1, max_length=20, pattern=r"^[\x21-\x7e]+$")]
Status = Literal["Accepted", "Blocked", "Expired", "Invalid", "ConcurrentTx"]


class IdTagPut(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        json_schema_extra={"example": {"status": "Accepted", "expiry": "2027-01-01T00:00:00Z"}},
    )

    status: Status = Field("Accepted", description="AuthorizationStatus (OCPP 1.6 7.2).")
    expiry: Moment | None = Field(
        None, description="After this an Accepted tag answers Expired; none: never."
    )


class IdTagOut(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        json_schema_extra={"example": {"idTag": "04E91C2A", "status": "Accepted", "expiry": None}},
    )

    id_tag: str
    status: str
    expiry: datetime | None


class IdTagPage(BaseModel):
    items: list[IdTagOut]
    total: int
    limit: int
    offset: int


def _out(id_tag: str, state: str, expiry: float | None) -> IdTagOut:
    moment = None if expiry is None else datetime.fromtimestamp(expiry, UTC)
    return IdTagOut(id_tag=id_tag, status=state, expiry=moment)


@router.get(
    "",
    response_model=IdTagPage,
    response_model_by_alias=True,
    summary="List id tags",
    description="Operator (tags identify drivers). Ordered by tag.",
    responses=problem_responses(401, 403, 422),
)
async def list_id_tags(
    operations: OperationsDep,
    _: Operator,
    limit: Annotated[int, page_limit(1000)] = 100,
    offset: Offset = 0,
) -> IdTagPage:
    rows = await operations.id_tags.list(limit=limit, offset=offset)
    return IdTagPage(
        items=[_out(*row) for row in rows],
        total=await operations.id_tags.count(),
        limit=limit,
        offset=offset,
    )


@router.get(
    "/{id_tag}",
    response_model=IdTagOut,
    summary="Get an id tag",
    description="Operator.",
    responses=problem_responses(401, 403, 404, 422),
)
async def get_id_tag(id_tag: IdTagPath, operations: OperationsDep, _: Operator) -> IdTagOut:
    found = await operations.id_tags.get(id_tag)
    if found is None:
        raise Problem(404, f"id tag {id_tag!r} is not in the list", kind="id-tag-not-found")
    return _out(id_tag, *found)


@router.put(
    "/{id_tag}",
    response_model=IdTagOut,
    summary="Add or change an id tag",
    description="Operator. Idempotent; the next Authorize of this tag sees the change.",
    responses=problem_responses(400, 401, 403, 422),
)
async def put_id_tag(
    id_tag: IdTagPath, body: IdTagPut, operations: OperationsDep, _: Operator
) -> IdTagOut:
    expiry = None if body.expiry is None else _epoch(body.expiry)
    await operations.id_tags.put(id_tag, body.status, expiry)
    return _out(id_tag, body.status, expiry)


@router.delete(
    "/{id_tag}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove an id tag",
    description="Operator. Removing the last tag makes the list empty again, and an empty "
    "list accepts every tag.",
    responses=problem_responses(401, 403, 404, 422),
)
async def delete_id_tag(id_tag: IdTagPath, operations: OperationsDep, _: Operator) -> Response:
    if not await operations.id_tags.delete(id_tag):
        raise Problem(404, f"id tag {id_tag!r} is not in the list", kind="id-tag-not-found")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _epoch(moment: datetime) -> float:
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
