"""Desired charging limits -> OCPP charging profiles -> reported charging limits.

``desired.chargingLimit`` (docs/shadow.md, Charging limits) holds a failsafe limit for the
whole charger and a limit per connector, in A per phase or in W. Each becomes one
SetChargingProfile with a fixed profile id, so a new value replaces the old profile on the
charger (OCPP 1.6 section 3.13: same chargingProfileId replaces):

- ``failsafe`` -> ChargePointMaxProfile, connector 0, id 1000, stack level 0;
- connector N -> id 1000 + N, stack level 1: a TxProfile for the transaction running on N
  (the bridge saw its StartTransaction on this connection), else a TxDefaultProfile.

All are Absolute with one period from 0 and no end; the limit is rounded to one decimal
(section 7.7, ChargingSchedulePeriod.limit). A transaction that starts under a
TxDefaultProfile the charger confirmed before the StartTransaction arrived is bound by it
(section 3.13.2: TxDefault is the default for new transactions), so nothing is sent at
StartTransaction; a new limit during the transaction (or a TxDefault confirmed after it
started) goes out as a TxProfile (a TxDefault may not touch a running transaction). The charger
deletes a TxProfile when its transaction ends (section 3.13.3), so at StopTransaction the
connector's TxDefaultProfile is set again.

Accepted: ``reported.chargingLimit`` gets the value with its purpose and time. Rejected,
NotSupported, a CALLERROR or no answer: ``reported.refused.chargingLimit[slot]``, not sent
again while desired stays (a new value, a boot or a new connection tries again). A slot
removed from desired is cleared with ClearChargingProfile by its id and leaves reported.

The decisions (when to set, which purpose, what a refusal means) are the same for every
OCPP version; the request shapes are not. :class:`ProfileMessages` holds a version's shapes:
:data:`OCPP16` here, the 2.0.1 ones in :mod:`bridge.v201.charging_profiles`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bridge.errors import (
    CallErrorReceived,
    CallTimeoutError,
    InvalidCallError,
    InvalidResponseError,
)
from bridge.reports import Reporter
from bridge.times import now

log = logging.getLogger(__name__)

Request = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
# A transaction's id: an integer the bridge gave (1.6), a string the station chose (2.0.1).
TransactionId = int | str

FAILSAFE = "failsafe"
PROFILE_ID_BASE = 1000
CONNECTOR_STACK_LEVEL = 1
FAILSAFE_STACK_LEVEL = 0
CHARGE_POINT_MAX = "ChargePointMaxProfile"
TX_DEFAULT = "TxDefaultProfile"
TX_PROFILE = "TxProfile"


def profile_id(slot: str) -> int:
    """The fixed profile id of a slot: 1000 for the failsafe, 1000 + N for connector N."""
    return PROFILE_ID_BASE if slot == FAILSAFE else PROFILE_ID_BASE + int(slot)


@dataclass(frozen=True, slots=True)
class Wanted:
    """One slot's desired limit, as sent (one decimal)."""

    unit: str
    limit: float
    phases: int
    # As desired: reported as such, so the delta empties once the charger has the limit
    # (the profile carries it rounded to one decimal).
    asked: float

    def shown(self) -> dict[str, Any]:
        return {"unit": self.unit, "limit": self.asked, "phases": self.phases}


@dataclass(frozen=True, slots=True)
class Sent:
    """What the charger confirmed for a slot on this connection."""

    wanted: Wanted
    purpose: str
    transaction_id: TransactionId | None
    at: float  # when the charger confirmed it


def wanted_slots(section: Any) -> tuple[dict[str, Wanted], dict[str, str]]:
    """The slots of a desired ``chargingLimit``, and the ones that cannot be sent (why)."""
    wanted: dict[str, Wanted] = {}
    invalid: dict[str, str] = {}
    if not isinstance(section, Mapping):
        return wanted, invalid
    unit = section.get("unit", "A")
    entries: dict[str, Any] = {}
    if "failsafe" in section:
        entries[FAILSAFE] = section["failsafe"]
    connectors = section.get("connectors")
    if isinstance(connectors, Mapping):
        entries.update({str(k): v for k, v in connectors.items()})
    for slot, entry in entries.items():
        problem = _problem(slot, unit, entry)
        if problem:
            invalid[slot] = problem
            continue
        phases = entry.get("phases", 3)
        asked = entry["limit"]
        wanted[slot] = Wanted(str(unit), round(float(asked), 1), int(phases), asked)
    return wanted, invalid


def _slots(section: Any) -> set[str]:
    """The slots a (partial) ``chargingLimit`` object names."""
    if not isinstance(section, Mapping):
        return set()
    slots = {FAILSAFE} if FAILSAFE in section else set()
    connectors = section.get("connectors")
    if isinstance(connectors, Mapping):
        slots |= {str(k) for k in connectors}
    return slots


def _problem(slot: str, unit: Any, entry: Any) -> str | None:
    if unit not in ("A", "W"):
        return "unit must be A or W"
    if slot != FAILSAFE and not (slot.isdigit() and 0 < int(slot) <= 255):
        return "a connector is a number from 1"
    if not isinstance(entry, Mapping):
        return "a limit is an object {limit, phases}"
    limit = entry.get("limit")
    if isinstance(limit, bool) or not isinstance(limit, int | float) or not 0 <= limit < 1e7:
        return "limit must be a number >= 0"
    phases = entry.get("phases", 3)
    if phases not in (1, 2, 3) or isinstance(phases, bool):
        return "phases must be 1, 2 or 3"
    return None


def profile_payload(
    slot: str, wanted: Wanted, transaction_id: TransactionId | None
) -> dict[str, Any]:
    """SetChargingProfile.req (OCPP 1.6 section 6.43) for a slot."""
    if slot == FAILSAFE:
        connector_id, purpose, level = 0, CHARGE_POINT_MAX, FAILSAFE_STACK_LEVEL
    else:
        connector_id = int(slot)
        purpose = TX_PROFILE if transaction_id is not None else TX_DEFAULT
        level = CONNECTOR_STACK_LEVEL
    profile: dict[str, Any] = {
        "chargingProfileId": profile_id(slot),
        "stackLevel": level,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": "Absolute",
        "chargingSchedule": {
            "chargingRateUnit": wanted.unit,
            "chargingSchedulePeriod": [
                {"startPeriod": 0, "limit": wanted.limit, "numberPhases": wanted.phases}
            ],
        },
    }
    if purpose == TX_PROFILE:
        profile["transactionId"] = transaction_id
    return {"connectorId": connector_id, "csChargingProfiles": profile}


def clear_payload(profile_id: int) -> dict[str, Any]:
    """ClearChargingProfile.req (OCPP 1.6 section 6.11) of one profile by its id."""
    return {"id": profile_id}


@dataclass(frozen=True, slots=True)
class ProfileMessages:
    """How one OCPP version carries a slot: the failsafe profile's purpose name (reported
    as the slot's ``purpose``), SetChargingProfile for a slot (a TxProfile when a
    transaction id is given) and ClearChargingProfile by profile id."""

    station_max: str
    set_payload: Callable[[str, Wanted, TransactionId | None], dict[str, Any]]
    clear_payload: Callable[[int], dict[str, Any]]


OCPP16 = ProfileMessages(CHARGE_POINT_MAX, profile_payload, clear_payload)


def refusal_reason(answer: Mapping[str, Any]) -> str | None:
    """Why a station refused, when it says (2.0.1 ``statusInfo.reasonCode``; 1.6 has none)."""
    info = answer.get("statusInfo")
    if isinstance(info, Mapping) and info.get("reasonCode") is not None:
        return str(info["reasonCode"])
    return None


class ChargingLimits:
    """One connection's charging-limit reconciliation (driven by the Reconciler's runs)."""

    def __init__(
        self,
        charger_id: str,
        request: Request,
        reporter: Reporter,
        messages: ProfileMessages = OCPP16,
    ) -> None:
        self.charger_id = charger_id
        self._request = request
        self._reporter = reporter
        self._messages = messages
        self._desired: dict[str, Wanted] = {}
        self._invalid: dict[str, str] = {}
        self._site: Any = None
        self._in_delta: set[str] = set()
        self._unit_in_delta = False
        self._seen_desired = False
        self._section = False  # desired holds a chargingLimit
        self._confirmed: dict[str, Sent] = {}
        self._refused: dict[str, tuple[Wanted | str, TransactionId | None]] = {}
        self._to_clear: set[str] = set()
        # connector (1.6) or EVSE (2.0.1) -> the transaction running there
        self._transactions: dict[int, TransactionId] = {}
        # connector -> when its StartTransaction reached the bridge: a TxDefaultProfile
        # confirmed before binds that transaction, one confirmed after need not.
        self._started_at: dict[int, float] = {}

    # --- inputs --------------------------------------------------------------------------
    def on_delta(self, message: Mapping[str, Any]) -> bool:
        """A delta message; True when there is something to do. The twin sends the whole
        desired state with it (``desired``), so a removed slot is seen; without it (an
        older twin) the delta alone tells what to set, and nothing is cleared."""
        state = message.get("state")
        delta = state.get("chargingLimit") if isinstance(state, Mapping) else None
        desired_state = message.get("desired")
        if isinstance(desired_state, Mapping):
            section = desired_state.get("chargingLimit")
        else:
            section = delta
        wanted, invalid = wanted_slots(section)
        if isinstance(desired_state, Mapping) and (self._seen_desired or section is not None):
            # Slots desired before (or set on this connection) and desired no more.
            gone = (set(self._desired) | set(self._confirmed)) - set(wanted)
            self._to_clear |= gone
            self._to_clear -= set(wanted)
        self._seen_desired = self._seen_desired or section is not None
        self._section = isinstance(section, Mapping)
        self._desired, self._invalid = wanted, invalid
        self._site = section.get("site") if isinstance(section, Mapping) else None
        self._in_delta = _slots(delta)
        self._unit_in_delta = isinstance(delta, Mapping) and "unit" in delta
        if isinstance(delta, Mapping) and "site" in delta:
            # Informative (which site's allocation this is): mirrored, nothing to send.
            site = {"site": self._site}
            self._reporter.report(self.charger_id, {"chargingLimit": site}, now())
        self._forget_refusals()
        return self.pending()

    def _forget_refusals(self) -> None:
        stale = [s for s in self._refused if s not in self._desired and s not in self._invalid]
        if stale:
            for slot in stale:
                self._refused.pop(slot, None)
            cleared = dict.fromkeys(stale)
            self._reporter.report(self.charger_id, {"refused": {"chargingLimit": cleared}}, now())

    def transaction_started(
        self, connector_id: int, transaction_id: TransactionId, at: float
    ) -> None:
        """``at``: when the StartTransaction arrived (before it was answered)."""
        self._transactions[connector_id] = transaction_id
        self._started_at[connector_id] = at

    def transaction_stopped(self, transaction_id: TransactionId) -> bool:
        """True when the connector's TxDefaultProfile must be set again."""
        for connector_id, running in list(self._transactions.items()):
            if running == transaction_id:
                del self._transactions[connector_id]
                self._started_at.pop(connector_id, None)
                sent = self._confirmed.get(str(connector_id))
                return sent is not None and sent.purpose == TX_PROFILE
        return False

    def booted(self) -> None:
        """The charger (re)booted: its profiles may be gone and its transactions ended.
        The boot's report set ``reported.chargingLimit`` to null, so the twin sends every
        desired slot in the delta again."""
        self._confirmed.clear()
        self._refused.clear()
        self._transactions.clear()
        self._started_at.clear()
        self._to_clear.clear()

    # --- the run ---------------------------------------------------------------------------
    def _purpose(self, slot: str) -> tuple[str, TransactionId | None]:
        if slot == FAILSAFE:
            return self._messages.station_max, None
        running = self._transactions.get(int(slot))
        return (TX_PROFILE, running) if running is not None else (TX_DEFAULT, None)

    def _due(self, slot: str, wanted: Wanted) -> bool:
        purpose, transaction_id = self._purpose(slot)
        if self._refused.get(slot) == (wanted, transaction_id):
            return False
        sent = self._confirmed.get(slot)
        if sent is not None:
            if sent.wanted != wanted:
                return True
            if purpose == TX_PROFILE and sent.purpose == TX_DEFAULT:
                # A TxDefaultProfile on the charger before the transaction started binds it
                # (the default for new transactions); one set since may not.
                return sent.at >= self._started_at.get(int(slot), 0.0)
            return sent.purpose != purpose or sent.transaction_id != transaction_id
        # Not set on this connection: the charger keeps what an earlier connection set
        # unless the delta says reported differs.
        return slot in self._in_delta or self._unit_in_delta

    def pending(self) -> bool:
        if self._to_clear:
            return True
        if any(self._refused.get(slot) != (reason, None) for slot, reason in self._invalid.items()):
            return True
        return any(self._due(slot, wanted) for slot, wanted in self._desired.items())

    async def reconcile(self) -> None:
        for slot, reason in sorted(self._invalid.items()):
            if self._refused.get(slot) != (reason, None):
                self._refused[slot] = (reason, None)
                self._record_refusal(slot, None, "Invalid", reason)
        cleared = bool(self._to_clear)
        for slot in sorted(self._to_clear):
            await self._clear(slot)
        if cleared and not self._section:
            # ``chargingLimit: null``: nothing of it stays reported (site, unit).
            self._reporter.report(self.charger_id, {"chargingLimit": None}, now())
        for slot, wanted in sorted(self._desired.items()):
            if self._due(slot, wanted):
                await self._set(slot, wanted)

    async def _set(self, slot: str, wanted: Wanted) -> None:
        purpose, transaction_id = self._purpose(slot)
        payload = self._messages.set_payload(slot, wanted, transaction_id)
        log.info(
            "%s: SetChargingProfile %s %s %s %s (id %d)",
            self.charger_id,
            purpose,
            slot,
            wanted.limit,
            wanted.unit,
            profile_id(slot),
        )
        try:
            answer = await self._request("SetChargingProfile", payload)
        except CallTimeoutError as exc:
            self._refuse(slot, wanted, transaction_id, "Timeout", str(exc))
            return
        except CallErrorReceived as exc:
            self._refuse(slot, wanted, transaction_id, "CallError", exc.error_code)
            return
        except (InvalidCallError, InvalidResponseError) as exc:
            self._refuse(slot, wanted, transaction_id, type(exc).__name__, str(exc))
            return
        status = str(answer.get("status"))
        if status != "Accepted":
            self._refuse(slot, wanted, transaction_id, status, refusal_reason(answer))
            return
        at = now()
        self._confirmed[slot] = Sent(wanted, purpose, transaction_id, at)
        self._refused.pop(slot, None)
        value: dict[str, Any] = {"limit": wanted.asked, "phases": wanted.phases}
        # transactionId null: a TxDefaultProfile replaced a TxProfile (merge patch).
        value.update({"purpose": purpose, "transactionId": transaction_id, "at": at})
        reported: dict[str, Any] = {"unit": wanted.unit}
        if self._site is not None:
            reported["site"] = self._site
        if slot == FAILSAFE:
            reported[FAILSAFE] = value
        else:
            reported["connectors"] = {slot: value}
        self._reporter.report(
            self.charger_id,
            {"chargingLimit": reported, "refused": {"chargingLimit": {slot: None}}},
            at,
        )

    async def _clear(self, slot: str) -> None:
        self._to_clear.discard(slot)
        self._confirmed.pop(slot, None)
        log.info("%s: ClearChargingProfile id %d", self.charger_id, profile_id(slot))
        try:
            answer = await self._request(
                "ClearChargingProfile", self._messages.clear_payload(profile_id(slot))
            )
        except (CallErrorReceived, InvalidCallError, InvalidResponseError) as exc:
            # The slot is not desired: nothing to retry; the charger keeps a stale
            # profile until it reboots or the slot is desired again.
            log.warning("%s: ClearChargingProfile %s failed: %s", self.charger_id, slot, exc)
        else:
            # Unknown: the charger had no such profile (deleted with its transaction,
            # or lost at a reboot); the slot is clear either way.
            log.debug("%s: ClearChargingProfile %s", self.charger_id, answer.get("status"))
        path: dict[str, Any] = (
            {FAILSAFE: None} if slot == FAILSAFE else {"connectors": {slot: None}}
        )
        self._reporter.report(self.charger_id, {"chargingLimit": path}, now())

    def _refuse(
        self,
        slot: str,
        wanted: Wanted,
        transaction_id: TransactionId | None,
        status: str,
        reason: str | None,
    ) -> None:
        log.warning(
            "%s: charging limit %s=%s refused: %s%s",
            self.charger_id,
            slot,
            wanted.limit,
            status,
            f" ({reason})" if reason else "",
        )
        self._refused[slot] = (wanted, transaction_id)
        self._record_refusal(slot, wanted, status, reason)

    def _record_refusal(
        self, slot: str, wanted: Wanted | None, status: str, reason: str | None
    ) -> None:
        at = now()
        refusal: dict[str, Any] = {
            "value": wanted.shown() if wanted is not None else None,
            "status": status,
            "at": at,
        }
        if reason:
            refusal["reason"] = reason
        self._reporter.report(self.charger_id, {"refused": {"chargingLimit": {slot: refusal}}}, at)
