"""API tokens: random bearer secrets with a role, stored only as SHA-256 hashes.

A token is ``ct_`` plus 32 random bytes (URL-safe base64), so a plain SHA-256 suffices to
store it: unlike a password there is nothing to brute-force, and lookup by hash stays an
index probe. The secret is shown once, when created.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from chargetwin.database import Database

TOKEN_PREFIX = "ct_"
# Writing last_used_at on every request would turn reads into writes; once a minute is
# precise enough to tell which tokens are still in use.
_LAST_USED_RESOLUTION = 60.0

SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS api_tokens (
        token_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        role TEXT NOT NULL,
        token_hash TEXT NOT NULL UNIQUE,
        created_at DOUBLE PRECISION NOT NULL,
        last_used_at DOUBLE PRECISION,
        revoked BOOLEAN NOT NULL DEFAULT FALSE
    )
    """,
)


class Role(StrEnum):
    """Ordered roles: each one may do what the ones before it may."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANKS[self]

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


_RANKS = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}


class TokenNotFoundError(LookupError):
    """No token with this id."""


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A stored token, without its secret."""

    token_id: str
    name: str
    role: Role
    created_at: float
    last_used_at: float | None
    revoked: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.token_id,
            "name": self.name,
            "role": self.role.value,
            "createdAt": self.created_at,
            "lastUsedAt": self.last_used_at,
            "revoked": self.revoked,
        }


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


class TokenStore:
    """The ``api_tokens`` table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_schema(self) -> None:
        for statement in SCHEMA:
            await self._db.execute(statement)

    async def create(self, role: Role | str, name: str) -> tuple[TokenInfo, str]:
        """Store a new token; return its record and the secret (never stored)."""
        role = Role(role)
        secret = new_secret()
        info = TokenInfo(
            token_id="tok_" + secrets.token_hex(8),
            name=name,
            role=role,
            created_at=time.time(),
            last_used_at=None,
            revoked=False,
        )
        await self._db.execute(
            "INSERT INTO api_tokens (token_id, name, role, token_hash, created_at, revoked)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (info.token_id, name, role.value, hash_token(secret), info.created_at, False),
        )
        return info, secret

    async def list(self) -> list[TokenInfo]:
        rows = await self._db.fetchall(
            "SELECT token_id, name, role, created_at, last_used_at, revoked FROM api_tokens"
            " ORDER BY created_at, token_id"
        )
        return [_info(row) for row in rows]

    async def get(self, token_id: str) -> TokenInfo:
        row = await self._db.fetchone(
            "SELECT token_id, name, role, created_at, last_used_at, revoked FROM api_tokens"
            " WHERE token_id = ?",
            (token_id,),
        )
        if row is None:
            raise TokenNotFoundError(token_id)
        return _info(row)

    async def revoke(self, token_id: str) -> None:
        changed = await self._db.execute(
            "UPDATE api_tokens SET revoked = ? WHERE token_id = ?", (True, token_id)
        )
        if changed == 0:
            raise TokenNotFoundError(token_id)

    async def authenticate(self, secret: str) -> TokenInfo | None:
        """The live (not revoked) token with this secret, or None."""
        if not secret.startswith(TOKEN_PREFIX):
            return None
        row = await self._db.fetchone(
            "SELECT token_id, name, role, created_at, last_used_at, revoked FROM api_tokens"
            " WHERE token_hash = ?",
            (hash_token(secret),),
        )
        if row is None:
            return None
        info = _info(row)
        if info.revoked:
            return None
        now = time.time()
        if info.last_used_at is None or now - info.last_used_at >= _LAST_USED_RESOLUTION:
            await self._db.execute(
                "UPDATE api_tokens SET last_used_at = ? WHERE token_id = ?", (now, info.token_id)
            )
        return info


def _info(row: tuple[Any, ...]) -> TokenInfo:
    return TokenInfo(
        token_id=str(row[0]),
        name=str(row[1]),
        role=Role(row[2]),
        created_at=float(row[3]),
        last_used_at=None if row[4] is None else float(row[4]),
        revoked=bool(row[5]),
    )


async def create_token(db: Database, role: Role | str, name: str) -> str:
    """Create a token (creating the table if needed) and return its secret; prints nothing.

    For ``chargetwin token create``: ``db`` must be open; ``role`` is viewer, operator or
    admin (``ValueError`` otherwise).
    """
    store = TokenStore(db)
    await store.create_schema()
    _, secret = await store.create(Role(role), name)
    return secret
