"""Request and response bodies: field names in camelCase on the wire, like the shadow.

Request bodies forbid unknown fields, so a typo (``sit`` for ``site``) is a 422 rather
than silently ignored.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from api.tokens import Role
from chargetwin.topics import CHARGER_ID_ALPHABET, CHARGER_ID_PATTERN


class _Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class _Request(_Wire):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


# --- chargers ------------------------------------------------------------------------
class ChargerCreate(_Request):
    """A charger to register; it connects over OCPP with ``id`` and ``password``."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "id": "CP-0001",
                "password": "s3cret-authorization-key",
                "site": "depot-north",
                "tags": ["dc", "150kW"],
                "description": "Bay 1, left",
            }
        }
    )

    id: str = Field(
        pattern=CHARGER_ID_PATTERN.pattern,
        description=f"The OCPP charge point identity: 1-48 characters of {CHARGER_ID_ALPHABET}.",
    )
    password: str = Field(
        min_length=16,
        max_length=64,
        description="HTTP Basic password (OCPP security profiles 1 and 2): a random secret "
        "of 16-64 characters. The OCPP 1.6 security whitepaper's AuthorizationKey is 16-20 "
        "bytes, 2.0.1's BasicAuthPassword at least 16 characters; passwords are kept as "
        "keyed fast hashes, which is only safe for secrets of that strength.",
    )
    site: str | None = Field(None, max_length=200)
    tags: list[str] = Field(default_factory=list, max_length=50)
    description: str | None = Field(None, max_length=1000)


class ChargerOut(_Wire):
    """A registered charger and the summary of its shadow (offline until it reports)."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "id": "CP-0001",
                "site": "depot-north",
                "tags": ["dc"],
                "description": None,
                "createdAt": 1767225600.0,
                "hasPassword": True,
                "online": True,
                "version": 42,
                "vendor": "ABB",
                "model": "Terra 54",
                "firmwareVersion": "1.8.2",
                "hasDelta": False,
                "connectors": {"0": "Available", "1": "Charging"},
                "updatedAt": 1767229200.0,
            }
        }
    )

    id: str
    site: str | None
    tags: list[str]
    description: str | None
    created_at: float = Field(description="Registration time, seconds since the epoch.")
    has_password: bool
    online: bool
    version: int = Field(description="Shadow version; 0 before the first report.")
    vendor: str | None
    model: str | None
    firmware_version: str | None
    has_delta: bool = Field(description="Desired state differs from reported state.")
    connectors: dict[str, str | None] = Field(description="Status per connector id.")
    updated_at: float | None = Field(description="Last shadow change, seconds since the epoch.")


class RotationOut(_Wire):
    """A charger password rotation: its state, never the password."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "rotationId": "6f1c2d0e8a9b4c3d9e7f1a2b3c4d5e6f",
                "status": "accepted",
                "reason": None,
                "requestedAt": 1767225600.0,
                "updatedAt": 1767225601.5,
            }
        }
    )

    rotation_id: str
    status: Literal["pending", "accepted", "done", "failed"] = Field(
        description="pending: not yet answered by the charger; accepted: the charger took "
        "it, both passwords work; done: the charger connected with the new one, the old one "
        "no longer works; failed: the charger refused it (see reason), the old one stays."
    )
    reason: str | None = Field(
        description="The charger's answer when not Accepted (Rejected, NotSupported, "
        "RebootRequired, CALLERROR ...)."
    )
    requested_at: float
    updated_at: float


class ChargerPage(_Wire):
    items: list[ChargerOut]
    total: int = Field(description="Chargers matching the filters, over all pages.")
    limit: int
    offset: int


# --- shadows ---------------------------------------------------------------------------
class ShadowState(_Wire):
    reported: dict[str, Any]
    desired: dict[str, Any]
    delta: dict[str, Any] | None = Field(
        None, description="Desired leaves that reported lacks or holds differently."
    )


class ShadowDocumentOut(_Wire):
    """The public shadow document; its ``version`` is also the response's ETag."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "state": {
                    "reported": {"config": {"HeartbeatInterval": "60"}},
                    "desired": {"config": {"HeartbeatInterval": "300"}},
                    "delta": {"config": {"HeartbeatInterval": "300"}},
                },
                "metadata": {
                    "reported": {"config": {"HeartbeatInterval": {"timestamp": 1.7e9}}},
                    "desired": {"config": {"HeartbeatInterval": {"timestamp": 1.7e9}}},
                },
                "version": 7,
                "timestamp": 1.7e9,
            }
        }
    )

    state: ShadowState
    metadata: dict[str, Any]
    version: int
    timestamp: float


class DesiredUpdateOut(_Wire):
    """The result of a desired-state patch the twin accepted."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {"version": 8, "desired": {"config": {"HeartbeatInterval": "300"}}}
        }
    )

    version: int = Field(description="The shadow version the change produced (the new ETag).")
    desired: dict[str, Any] = Field(description="The whole desired state after the change.")


# --- tokens ----------------------------------------------------------------------------
class TokenCreate(_Request):
    model_config = ConfigDict(json_schema_extra={"example": {"name": "grafana", "role": "viewer"}})

    name: str = Field(min_length=1, max_length=100, description="Who or what uses the token.")
    role: Role


class TokenOut(_Wire):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "id": "tok_5f0c2a9e41b7d3c8",
                "name": "grafana",
                "role": "viewer",
                "createdAt": 1767225600.0,
                "lastUsedAt": None,
                "revoked": False,
            }
        }
    )

    id: str
    name: str
    role: Role
    created_at: float
    last_used_at: float | None
    revoked: bool


class TokenCreated(TokenOut):
    token: str = Field(description="The bearer secret. Shown only in this response.")


# --- audit -----------------------------------------------------------------------------
class AuditEntryOut(_Wire):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "id": 12,
                "at": 1767229200.0,
                "actor": "ops-alice",
                "actorId": "tok_5f0c2a9e41b7d3c8",
                "role": "operator",
                "chargerId": "CP-0001",
                "action": "desired.patch",
                "patch": {"config": {"HeartbeatInterval": "300"}},
                "version": 8,
                "outcome": "accepted",
                "status": 200,
                "detail": None,
            }
        }
    )

    id: int
    at: float
    actor: str = Field(description="Token name (or CHARGETWIN_ADMIN_TOKEN).")
    actor_id: str | None = Field(description="Token id; null for the admin env token.")
    role: str
    charger_id: str
    action: str
    patch: Any
    version: int | None = Field(description="Shadow version produced, when accepted.")
    outcome: str = Field(
        description="accepted, invalid, precondition-failed, rejected, timeout or expired."
    )
    status: int = Field(description="The HTTP status the API answered.")
    detail: str | None


# --- health ----------------------------------------------------------------------------
class HealthOut(_Wire):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {"status": "ok", "mqtt": True, "database": True, "version": "0.1.0"}
        }
    )

    status: str = Field(description="ok, or degraded when a dependency is down (HTTP 503).")
    mqtt: bool = Field(description="Connected to the MQTT broker.")
    database: bool = Field(description="The database answered a query.")
    version: str
