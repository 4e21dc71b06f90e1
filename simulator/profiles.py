"""Smart charging (OCPP 1.6 section 3.13): the profiles a charger holds and the limit they set.

A profile (section 7.8, ChargingProfile) has a purpose, a stack level and a schedule of
periods. At a given time, per purpose the valid profile with the highest stack level is in
force (section 3.13.2); a TxProfile overrules the TxDefaultProfile for its transaction, and
the ChargePointMaxProfile caps the result (section 3.13.1). The composite schedule
(section 5.7, GetCompositeSchedule) is that limit over a window of time.

Limits are kept in amperes per phase with a number of phases; a profile in W is converted
at the nominal voltage (230 V), as a charger without a per-phase voltage reading does.

OCPP 2.0.1 (part 2, section K) keeps this model: an EVSE is a 1.6 connector, the
ChargingStationMaxProfile is the ChargePointMaxProfile, a profile names its ``id`` and
holds a list of schedules (:meth:`Profile.parse_201` reads one into the same
:class:`Profile`), and a transaction id is a string.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "CHARGE_POINT_MAX",
    "STATION_MAX",
    "TX_DEFAULT",
    "TX_PROFILE",
    "Limit",
    "Period",
    "Profile",
    "ProfileError",
    "ProfileStore",
    "camel_case",
    "parse_time",
]

CHARGE_POINT_MAX = "ChargePointMaxProfile"
STATION_MAX = "ChargingStationMaxProfile"  # its OCPP 2.0.1 name
TX_DEFAULT = "TxDefaultProfile"
TX_PROFILE = "TxProfile"
PURPOSES = (CHARGE_POINT_MAX, TX_DEFAULT, TX_PROFILE)
NOMINAL_VOLTAGE = 230.0
DEFAULT_PHASES = 3  # section 7.13: numberPhases absent means 3
RECURRENCE_S = {"Daily": 86_400, "Weekly": 7 * 86_400}


# A transaction's id: an integer in 1.6, a string the station chose in 2.0.1.
TransactionId = int | str


class ProfileError(ValueError):
    """A profile the charger cannot install (the answer is Rejected)."""


def camel_case(value: Any) -> Any:
    """The ``ocpp`` library hands nested payloads over in snake_case; profiles are read in
    the OCPP spelling (1.6 section 7.8, 2.0.1 part 2 section 2), whichever arrives."""
    if isinstance(value, dict):
        return {_camel(str(k)): camel_case(v) for k, v in value.items()}
    if isinstance(value, list):
        return [camel_case(v) for v in value]
    return value


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def parse_time(text: Any) -> float:
    """An OCPP dateTime as epoch seconds; ProfileError when it is not one."""
    if not isinstance(text, str):
        raise ProfileError(f"not a dateTime: {text!r}")
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ProfileError(f"not a dateTime: {text!r}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def iso_time(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Limit:
    """What the charger offers a connector: amperes per phase on ``phases`` phases."""

    amps: float
    phases: int

    def watts(self) -> float:
        return self.amps * NOMINAL_VOLTAGE * self.phases


@dataclass(frozen=True, slots=True)
class Period:
    start_s: int
    limit: float  # in the profile's unit
    phases: int


@dataclass(frozen=True, slots=True)
class Profile:
    """One installed ChargingProfile (section 7.8), its times as epoch seconds."""

    id: int
    connector_id: int
    stack_level: int
    purpose: str
    kind: str  # Absolute, Recurring, Relative
    unit: str  # A or W
    periods: tuple[Period, ...]
    start: float | None = None
    duration: int | None = None
    recurrency: str | None = None
    valid_from: float | None = None
    valid_to: float | None = None
    transaction_id: TransactionId | None = None
    installed_at: float = 0.0

    @classmethod
    def parse(cls, connector_id: int, payload: dict[str, Any], at: float) -> Profile:
        """Read a ``csChargingProfiles`` object; ProfileError explains what is wrong."""
        try:
            schedule = payload["chargingSchedule"]
            purpose = str(payload["chargingProfilePurpose"])
            kind = str(payload["chargingProfileKind"])
            unit = str(schedule["chargingRateUnit"])
            raw_periods = schedule["chargingSchedulePeriod"]
            profile_id = int(payload["chargingProfileId"])
            stack_level = int(payload["stackLevel"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ProfileError(f"incomplete profile: {exc}") from exc
        if purpose not in PURPOSES:
            raise ProfileError(f"unknown purpose {purpose}")
        if unit not in ("A", "W"):
            raise ProfileError(f"unknown unit {unit}")
        if kind not in ("Absolute", "Recurring", "Relative"):
            raise ProfileError(f"unknown kind {kind}")
        periods: list[Period] = []
        for raw in raw_periods or []:
            limit = float(raw["limit"])
            if not math.isfinite(limit) or limit < 0:
                raise ProfileError(f"bad limit {raw['limit']!r}")
            phases = int(raw.get("numberPhases") or DEFAULT_PHASES)
            if phases not in (1, 2, 3):
                raise ProfileError(f"bad numberPhases {phases}")
            periods.append(Period(int(raw["startPeriod"]), limit, phases))
        if not periods or periods[0].start_s != 0:
            raise ProfileError("the first schedule period must start at 0")
        if any(b.start_s <= a.start_s for a, b in itertools.pairwise(periods)):
            raise ProfileError("schedule periods must be in increasing startPeriod order")
        recurrency = payload.get("recurrencyKind")
        if kind == "Recurring" and recurrency not in RECURRENCE_S:
            raise ProfileError("a Recurring profile needs recurrencyKind Daily or Weekly")
        start = schedule.get("startSchedule")
        if kind == "Recurring" and start is None:
            raise ProfileError("a Recurring profile needs startSchedule")
        duration = schedule.get("duration")
        transaction_id = payload.get("transactionId")
        if transaction_id is not None and not isinstance(transaction_id, str):
            transaction_id = int(transaction_id)
        return cls(
            id=profile_id,
            connector_id=connector_id,
            stack_level=stack_level,
            purpose=purpose,
            kind=kind,
            unit=unit,
            periods=tuple(periods),
            start=parse_time(start) if start is not None else None,
            duration=int(duration) if duration is not None else None,
            recurrency=recurrency if kind == "Recurring" else None,
            valid_from=_optional_time(payload.get("validFrom")),
            valid_to=_optional_time(payload.get("validTo")),
            transaction_id=transaction_id,
            installed_at=at,
        )

    @classmethod
    def parse_201(cls, evse_id: int, payload: dict[str, Any], at: float) -> Profile:
        """Read an OCPP 2.0.1 ChargingProfileType (part 2, 2.10) set on EVSE ``evse_id``.
        Only one schedule per profile is supported (more come with ISO 15118 sales
        tariffs, which this charger does not do)."""
        schedules = payload.get("chargingSchedule")
        if not isinstance(schedules, list) or len(schedules) != 1:
            raise ProfileError("one charging schedule per profile is supported")
        purpose = payload.get("chargingProfilePurpose")
        if purpose == CHARGE_POINT_MAX:
            raise ProfileError(f"unknown purpose {purpose}")  # a 1.6 name
        shape = dict(payload)
        shape["chargingSchedule"] = schedules[0]
        shape["chargingProfilePurpose"] = CHARGE_POINT_MAX if purpose == STATION_MAX else purpose
        shape["chargingProfileId"] = payload.get("id")
        return cls.parse(evse_id, shape, at)

    def origin(self, at: float, tx_start: float | None) -> float:
        """When the schedule's period 0 starts for time ``at``."""
        if self.kind == "Relative":
            return tx_start if tx_start is not None else at
        if self.kind == "Recurring":
            assert self.start is not None and self.recurrency is not None
            cycle = RECURRENCE_S[self.recurrency]
            return self.start + math.floor((at - self.start) / cycle) * cycle
        # Absolute without startSchedule: from the second it was installed.
        return self.start if self.start is not None else math.floor(self.installed_at)

    def limit_at(self, at: float, tx_start: float | None) -> Limit | None:
        """The limit this profile sets at ``at``; None when it is not in force then."""
        if self.valid_from is not None and at < self.valid_from:
            return None
        if self.valid_to is not None and at >= self.valid_to:
            return None
        elapsed = at - self.origin(at, tx_start)
        if elapsed < 0 or (self.duration is not None and elapsed >= self.duration):
            return None
        period = self.periods[0]
        for candidate in self.periods:
            if candidate.start_s <= elapsed:
                period = candidate
        if self.unit == "A":
            return Limit(period.limit, period.phases)
        return Limit(period.limit / (NOMINAL_VOLTAGE * period.phases), period.phases)

    def edges(self, begin: float, end: float, tx_start: float | None) -> set[float]:
        """Times in [begin, end) where this profile's limit may change."""
        out: set[float] = set()
        for bound in (self.valid_from, self.valid_to):
            if bound is not None and begin <= bound < end:
                out.add(bound)
        origins = [self.origin(begin, tx_start)]
        if self.recurrency is not None:
            cycle = RECURRENCE_S[self.recurrency]
            while origins[-1] + cycle < end:
                origins.append(origins[-1] + cycle)
        for origin in origins:
            marks = [origin + p.start_s for p in self.periods]
            if self.duration is not None:
                marks.append(origin + self.duration)
            out.update(m for m in marks if begin <= m < end)
        return out


def _optional_time(value: Any) -> float | None:
    return None if value is None else parse_time(value)


class ProfileStore:
    """The profiles one charger holds (section 3.13), at most ``capacity`` of them."""

    def __init__(self, capacity: int = 8) -> None:
        self.capacity = capacity
        self.profiles: dict[int, Profile] = {}

    def install(self, profile: Profile, running: Mapping[int, TransactionId]) -> None:
        """Install or replace (same id, or same purpose and stack level on the connector);
        ``running`` maps connector id to the transaction running there."""
        if profile.purpose == CHARGE_POINT_MAX and profile.connector_id != 0:
            raise ProfileError("a ChargePointMaxProfile is set on connector 0")
        if profile.purpose == TX_PROFILE:
            if profile.connector_id == 0:
                raise ProfileError("a TxProfile is set on a connector, not 0")
            running_tx = running.get(profile.connector_id)
            # Section 5.16: without a transaction on the connector a TxProfile is discarded.
            if running_tx is None:
                raise ProfileError("no transaction runs on the connector")
            if profile.transaction_id is not None and profile.transaction_id != running_tx:
                raise ProfileError(f"transaction {profile.transaction_id} does not run there")
        replaced = [
            p.id
            for p in self.profiles.values()
            if p.id == profile.id
            or (
                p.purpose == profile.purpose
                and p.stack_level == profile.stack_level
                and p.connector_id == profile.connector_id
            )
        ]
        if len(self.profiles) - len(replaced) >= self.capacity:
            raise ProfileError(f"already {self.capacity} profiles installed")
        for profile_id in replaced:
            del self.profiles[profile_id]
        self.profiles[profile.id] = profile

    def clear(
        self,
        profile_id: int | None = None,
        connector_id: int | None = None,
        purpose: str | None = None,
        stack_level: int | None = None,
    ) -> int:
        """ClearChargingProfile (section 5.5): how many profiles matched and went."""
        if profile_id is not None:
            return 1 if self.profiles.pop(profile_id, None) is not None else 0
        gone = [
            p.id
            for p in self.profiles.values()
            if (connector_id is None or p.connector_id == connector_id)
            and (purpose is None or p.purpose == purpose)
            and (stack_level is None or p.stack_level == stack_level)
        ]
        for pid in gone:
            del self.profiles[pid]
        return len(gone)

    def transaction_ended(self, connector_id: int) -> None:
        """Section 3.13.3: a TxProfile ends with its transaction."""
        self.clear(connector_id=connector_id, purpose=TX_PROFILE)

    def _top(self, purpose: str, connectors: tuple[int, ...], at: float, tx: float | None) -> Any:
        """The limit of the highest stack level in force for ``purpose`` (ties: the
        connector's own profile before one for the whole charger); None: no limit."""
        best: tuple[int, int, Limit] | None = None
        for p in self.profiles.values():
            if p.purpose != purpose or p.connector_id not in connectors:
                continue
            limit = p.limit_at(at, tx)
            if limit is None:
                continue
            rank = (p.stack_level, p.connector_id)
            if best is None or rank > best[:2]:
                best = (*rank, limit)
        return None if best is None else best[2]

    def limit(self, connector_id: int, at: float, tx_start: float | None = None) -> Limit | None:
        """What connector ``connector_id`` may draw at ``at`` (0: the charger's cap);
        ``tx_start`` is the start of its transaction, None when none runs."""
        cap: Limit | None = self._top(CHARGE_POINT_MAX, (0,), at, tx_start)
        if connector_id == 0:
            return cap
        own: Limit | None = None
        if tx_start is not None:
            own = self._top(TX_PROFILE, (connector_id,), at, tx_start)
        if own is None:
            own = self._top(TX_DEFAULT, (0, connector_id), at, tx_start)
        if own is None or cap is None:
            return own or cap
        return own if own.amps <= cap.amps else Limit(cap.amps, min(cap.phases, own.phases))

    def composite(
        self,
        connector_id: int,
        at: float,
        duration: int,
        unit: str,
        tx_start: float | None,
        default: Limit,
    ) -> dict[str, Any]:
        """A GetCompositeSchedule ``chargingSchedule`` from ``at`` for ``duration`` s;
        where no profile is in force the charger's own maximum (``default``) applies."""
        end = at + duration
        marks = {at}
        for p in self.profiles.values():
            marks |= p.edges(at, end, tx_start)
        periods: list[dict[str, Any]] = []
        for mark in sorted(marks):
            limit = self.limit(connector_id, mark, tx_start) or default
            value = limit.amps if unit == "A" else limit.watts()
            entry = {
                "startPeriod": round(mark - at),
                "limit": round(value, 1),
                "numberPhases": limit.phases,
            }
            if periods and (
                periods[-1]["limit"] == entry["limit"]
                and periods[-1]["numberPhases"] == entry["numberPhases"]
            ):
                continue
            if periods and periods[-1]["startPeriod"] == entry["startPeriod"]:
                periods[-1] = entry
                continue
            periods.append(entry)
        return {
            "duration": duration,
            "startSchedule": iso_time(at),
            "chargingRateUnit": unit,
            "chargingSchedulePeriod": periods,
        }
