"""Configuration profiles: named sets of desired OCPP configuration, and drift from them.

A profile is ``{KEY: "value"}`` plus an optional target (filter or ids, :mod:`fleet.targets`).
Its keys may be of both OCPP versions: a 1.6 configuration key (``HeartbeatInterval``) and
a 2.0.1 device-model key (``OCPPCommCtrlr/HeartbeatInterval``, which always holds ``/``).
Each charger takes the keys of its version (:func:`keys_for`, from
``reported.connection.ocppVersion``; a charger that never connected, whose version is not
known, takes them all). Applying merges a charger's keys into its ``desired.config``
through the twin; the bridge sends ChangeConfiguration (1.6) or SetVariables (2.0.1). Drift
compares each target's reported configuration with the keys of its version and says why a
key differs, from the shadow alone:

- ``refused``: the charger refused this value (``reported.refused.config.KEY``, with status);
- ``not-applied``: the desired configuration lacks the profile's value (never applied, or
  changed since);
- ``offline``: desired is set, the charger is offline, so it cannot have it yet;
- ``pending``: desired is set, the charger is online, and has not reported the value yet.
"""

from __future__ import annotations

import builtins
import json
import time
from dataclasses import dataclass
from typing import Any

from chargetwin.database import Database
from fleet.targets import section

SCHEMA = """
CREATE TABLE IF NOT EXISTS config_profiles (
    name TEXT PRIMARY KEY,
    description TEXT,
    config TEXT NOT NULL,
    target TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
)
"""

REFUSED, NOT_APPLIED, OFFLINE, PENDING = "refused", "not-applied", "offline", "pending"
DRIFT_REASONS = (REFUSED, NOT_APPLIED, OFFLINE, PENDING)
OCPP16, OCPP201 = "1.6", "2.0.1"


def ocpp_version(document: dict[str, Any] | None) -> str | None:
    """The OCPP version the charger last connected with (None: it never connected)."""
    version = section(document, "reported", "connection").get("ocppVersion")
    return version if version in (OCPP16, OCPP201) else None


def keys_for(config: dict[str, str], version: str | None) -> dict[str, str]:
    """The keys of ``config`` a charger of this OCPP version takes.

    A 2.0.1 device-model key is ``COMPONENT/VARIABLE`` and a 1.6 key never holds ``/``
    (docs/ocpp201.md), so the key alone says its version. An unknown version takes every
    key: the bridge refuses, visibly in ``reported.refused``, those of the other version.
    """
    if version is None:
        return dict(config)
    wants_201 = version == OCPP201
    return {key: value for key, value in config.items() if ("/" in key) == wants_201}


class ProfileError(Exception):
    """Base of the profile store's refusals."""


class ProfileExistsError(ProfileError):
    """A profile with this name exists."""


class ProfileNotFoundError(ProfileError):
    """No profile with this name."""


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    description: str | None
    config: dict[str, str]
    target: dict[str, Any] | None
    created_at: float
    updated_at: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "config": dict(self.config),
            "target": self.target,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        }


@dataclass(frozen=True, slots=True)
class KeyDrift:
    key: str
    want: str
    reported: str | None
    desired: str | None
    reason: str
    status: str | None = None  # the refusal's status (Rejected, NotSupported, ...)

    def as_dict(self) -> dict[str, Any]:
        out = {
            "key": self.key,
            "want": self.want,
            "reported": self.reported,
            "desired": self.desired,
            "reason": self.reason,
        }
        if self.status is not None:
            out["status"] = self.status
        return out


def drift(document: dict[str, Any] | None, config: dict[str, str]) -> list[KeyDrift]:
    """The profile keys whose reported value differs from ``config`` in this shadow, and why.

    Only the keys of the charger's OCPP version count (:func:`keys_for`): a 2.0.1 station
    never drifts for a 1.6 key, nor a 1.6 charger for a device-model key.
    """
    config = keys_for(config, ocpp_version(document))
    reported = section(document, "reported", "config")
    desired = section(document, "desired", "config")
    refused = section(document, "reported", "refused", "config")
    connection = section(document, "reported", "connection")
    online = bool(connection.get("online"))
    out = []
    for key, want in sorted(config.items()):
        have = reported.get(key)
        if have == want:
            continue
        asked = desired.get(key)
        refusal = refused.get(key)
        status = None
        if asked != want:
            reason = NOT_APPLIED
        elif isinstance(refusal, dict) and refusal.get("value") == want:
            reason, status = REFUSED, str(refusal.get("status") or "Rejected")
        elif not online:
            reason = OFFLINE
        else:
            reason = PENDING
        out.append(
            KeyDrift(
                key,
                want,
                None if have is None else str(have),
                None if asked is None else str(asked),
                reason,
                status,
            )
        )
    return out


def _profile(row: tuple[Any, ...]) -> Profile:
    return Profile(
        name=str(row[0]),
        description=row[1],
        config=dict(json.loads(row[2])),
        target=None if row[3] is None else json.loads(row[3]),
        created_at=float(row[4]),
        updated_at=float(row[5]),
    )


_COLUMNS = "name, description, config, target, created_at, updated_at"


class ProfileStore:
    """The ``config_profiles`` table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_schema(self) -> None:
        await self._db.execute(SCHEMA)

    async def create(
        self,
        name: str,
        config: dict[str, str],
        *,
        description: str | None = None,
        target: dict[str, Any] | None = None,
    ) -> Profile:
        now = time.time()
        inserted = await self._db.execute(
            f"INSERT INTO config_profiles ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (name) DO NOTHING",
            (name, description, json.dumps(config), _json(target), now, now),
        )
        if inserted != 1:
            raise ProfileExistsError(f"profile {name!r} exists")
        return Profile(name, description, dict(config), target, now, now)

    async def put(
        self,
        name: str,
        config: dict[str, str],
        *,
        description: str | None = None,
        target: dict[str, Any] | None = None,
    ) -> tuple[Profile, bool]:
        """Create or replace; True when it was created."""
        now = time.time()
        changed = await self._db.execute(
            "UPDATE config_profiles SET description = ?, config = ?, target = ?, updated_at = ?"
            " WHERE name = ?",
            (description, json.dumps(config), _json(target), now, name),
        )
        if changed:
            return await self.get(name), False
        try:
            return await self.create(name, config, description=description, target=target), True
        except ProfileExistsError:  # created meanwhile: replace it
            return await self.put(name, config, description=description, target=target)

    async def get(self, name: str) -> Profile:
        row = await self._db.fetchone(
            f"SELECT {_COLUMNS} FROM config_profiles WHERE name = ?", (name,)
        )
        if row is None:
            raise ProfileNotFoundError(f"no profile {name!r}")
        return _profile(row)

    async def list(self) -> builtins.list[Profile]:
        rows = await self._db.fetchall(f"SELECT {_COLUMNS} FROM config_profiles ORDER BY name")
        return [_profile(r) for r in rows]

    async def delete(self, name: str) -> None:
        if not await self._db.execute("DELETE FROM config_profiles WHERE name = ?", (name,)):
            raise ProfileNotFoundError(f"no profile {name!r}")


def _json(value: dict[str, Any] | None) -> str | None:
    return None if value is None else json.dumps(value)
