"""The audit log: every desired-state change asked through the API, and how it ended.

Written after the twin answered (or refused, or did not answer), so an ``accepted`` entry
always names the shadow version the change produced. Refusals are kept too: an operator
looking for "why did my change not happen" finds the reason here. Charger password
rotations are here as well (action ``credentials.rotate``, ``patch`` = ``{rotationId,
status}``, never the password): requested through the API, then answered and completed
in the bridge (:mod:`bridge.credentials`), which writes to the same table.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from chargetwin.database import Database


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    """The twin applied the change; ``version`` is the resulting shadow version."""
    INVALID = "invalid"
    """The API refused it: the merged desired state breaks the schema."""
    PRECONDITION_FAILED = "precondition-failed"
    """``If-Match`` named a version that is no longer current."""
    REJECTED = "rejected"
    """The twin refused it (see ``status`` and ``detail``)."""
    TIMEOUT = "timeout"
    """No answer from the twin in time. The request carried a deadline that the twin
    never applies past, so the change was applied only if the twin did so before the
    deadline and its answer was then lost or late (see ``docs/shadow.md``)."""
    EXPIRED = "expired"
    """The twin got the change only after its deadline (a worker was gone, say) and did
    not apply it: the change was not made."""


def _schema(db: Database) -> tuple[str, ...]:
    # The one statement the two engines do not share: an auto-incrementing key.
    key = (
        "BIGSERIAL PRIMARY KEY"
        if db.url.startswith(("postgresql://", "postgres://"))
        else "INTEGER PRIMARY KEY AUTOINCREMENT"
    )
    return (
        f"""
        CREATE TABLE IF NOT EXISTS audit_log (
            entry_id {key},
            at DOUBLE PRECISION NOT NULL,
            actor TEXT NOT NULL,
            actor_id TEXT,
            role TEXT NOT NULL,
            charger_id TEXT NOT NULL,
            action TEXT NOT NULL,
            patch TEXT NOT NULL,
            version BIGINT,
            outcome TEXT NOT NULL,
            status INTEGER NOT NULL,
            detail TEXT
        )
        """,
        "CREATE INDEX IF NOT EXISTS audit_log_charger ON audit_log (charger_id, entry_id)",
    )


@dataclass(frozen=True, slots=True)
class AuditEntry:
    entry_id: int
    at: float
    actor: str
    actor_id: str | None
    role: str
    charger_id: str
    action: str
    patch: Any
    version: int | None
    outcome: Outcome
    status: int
    detail: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.entry_id,
            "at": self.at,
            "actor": self.actor,
            "actorId": self.actor_id,
            "role": self.role,
            "chargerId": self.charger_id,
            "action": self.action,
            "patch": self.patch,
            "version": self.version,
            "outcome": self.outcome.value,
            "status": self.status,
            "detail": self.detail,
        }


class AuditLog:
    """The ``audit_log`` table, newest entries first when read."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_schema(self) -> None:
        for statement in _schema(self._db):
            await self._db.execute(statement)

    async def record(
        self,
        *,
        actor: str,
        actor_id: str | None,
        role: str,
        charger_id: str,
        action: str,
        patch: Any,
        outcome: Outcome,
        status: int,
        version: int | None = None,
        detail: str | None = None,
    ) -> None:
        await self._db.execute(
            "INSERT INTO audit_log (at, actor, actor_id, role, charger_id, action, patch,"
            " version, outcome, status, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                time.time(),
                actor,
                actor_id,
                role,
                charger_id,
                action,
                json.dumps(patch, separators=(",", ":"), ensure_ascii=False),
                version,
                outcome.value,
                status,
                detail,
            ),
        )

    async def list(self, *, charger_id: str | None = None, limit: int = 100) -> list[AuditEntry]:
        where, params = (" WHERE charger_id = ?", [charger_id]) if charger_id else ("", [])
        rows = await self._db.fetchall(
            "SELECT entry_id, at, actor, actor_id, role, charger_id, action, patch, version,"
            f" outcome, status, detail FROM audit_log{where} ORDER BY entry_id DESC LIMIT ?",
            (*params, limit),
        )
        return [
            AuditEntry(
                entry_id=int(r[0]),
                at=float(r[1]),
                actor=str(r[2]),
                actor_id=r[3],
                role=str(r[4]),
                charger_id=str(r[5]),
                action=str(r[6]),
                patch=json.loads(r[7]),
                version=None if r[8] is None else int(r[8]),
                outcome=Outcome(r[9]),
                status=int(r[10]),
                detail=r[11],
            )
            for r in rows
        ]
