"""Bearer-token authentication and role checks, as FastAPI dependencies.

Roles are ordered (viewer < operator < admin). A missing or unknown token answers 401 with
``WWW-Authenticate: Bearer`` (RFC 6750 section 3); a known token whose role is too low
answers 403, so clients can tell "log in" from "ask for more rights".
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.backends import Backend, get_backend
from api.problems import Problem
from api.tokens import Role

bearer_scheme = HTTPBearer(
    scheme_name="bearerAuth",
    bearerFormat="ct_...",
    description="An API token (`chargetwin token create --role viewer|operator|admin`, "
    "`POST /api/v1/tokens`, or `CHARGETWIN_ADMIN_TOKEN`).",
    auto_error=False,
)

ADMIN_TOKEN_NAME = "CHARGETWIN_ADMIN_TOKEN"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the token's name and id (``None`` for the admin env token)."""

    name: str
    token_id: str | None
    role: Role


def _unauthorized(detail: str, error: str | None = None) -> Problem:
    challenge = 'Bearer realm="chargetwin"'
    if error:
        challenge += f', error="{error}"'
    return Problem(401, detail, kind="unauthorized", headers={"WWW-Authenticate": challenge})


async def authenticate(
    backend: Annotated[Backend, Depends(get_backend)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Principal:
    if credentials is None or not credentials.credentials:
        raise _unauthorized("an Authorization: Bearer token is required")
    secret = credentials.credentials
    admin = backend.admin_token.get_secret_value() if backend.admin_token else ""
    # Constant-time: the env token is a fixed secret an attacker could probe by timing.
    if admin and hmac.compare_digest(secret.encode(), admin.encode()):
        return Principal(ADMIN_TOKEN_NAME, None, Role.ADMIN)
    info = await backend.tokens.authenticate(secret)
    if info is None:
        raise _unauthorized("the token is unknown or revoked", "invalid_token")
    return Principal(info.name, info.token_id, info.role)


def require(role: Role) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency admitting callers whose role is ``role`` or higher."""

    async def check(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if not principal.role.allows(role):
            raise Problem(
                403,
                f"this needs the {role.value} role; the token has {principal.role.value}",
                kind="forbidden",
            )
        return principal

    return check


Viewer = Annotated[Principal, Depends(require(Role.VIEWER))]
Operator = Annotated[Principal, Depends(require(Role.OPERATOR))]
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]
