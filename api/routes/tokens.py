"""API tokens over HTTP (admin only): create one (its secret shown once), list, revoke."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response, status

from api.auth import Admin
from api.backends import Backend, get_backend
from api.models import TokenCreate, TokenCreated, TokenOut
from api.problems import Problem, problem_responses
from api.tokens import TokenNotFoundError

router = APIRouter(prefix="/tokens", tags=["tokens"])

BackendDep = Annotated[Backend, Depends(get_backend)]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=TokenCreated,
    summary="Create an API token",
    description="Admin. The response holds the secret; it is stored only as a hash and "
    "cannot be shown again.",
    responses=problem_responses(401, 403, 422),
)
async def issue_token(
    body: TokenCreate, backend: BackendDep, _: Admin, response: Response
) -> TokenCreated:
    info, secret = await backend.tokens.create(body.role, body.name)
    response.headers["Location"] = f"/api/v1/tokens/{info.token_id}"
    response.headers["Cache-Control"] = "no-store"
    return TokenCreated.model_validate({**info.as_dict(), "token": secret})


@router.get(
    "",
    response_model=list[TokenOut],
    summary="List API tokens",
    description="Admin. Every token, revoked ones included; never their secrets.",
    responses=problem_responses(401, 403),
)
async def list_tokens(backend: BackendDep, _: Admin) -> list[TokenOut]:
    return [TokenOut.model_validate(t.as_dict()) for t in await backend.tokens.list()]


@router.delete(
    "/{token_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke an API token",
    description="Admin. The token stops working at once; its record stays for the audit log.",
    responses=problem_responses(401, 403, 404),
)
async def revoke_token(token_id: str, backend: BackendDep, _: Admin) -> Response:
    try:
        await backend.tokens.revoke(token_id)
    except TokenNotFoundError as exc:
        raise Problem(404, f"no token {token_id!r}", kind="token-not-found") from exc
    return Response(status_code=status.HTTP_204_NO_CONTENT)
