"""Desired charging limits as OCPP 2.0.1 charging profiles (part 2, K01 and K10).

The slots, ids, stack levels and the reconciliation are the 1.6 ones
(:mod:`bridge.charging_limits`); only the request shapes differ:

- ``failsafe`` -> ChargingStationMaxProfile on EVSE 0 (the 2.0.1 name of the 1.6
  ChargePointMaxProfile), id 1000, stack level 0;
- port N is EVSE N (docs/ocpp201.md, "Port identity") -> id 1000 + N, stack level 1, a
  TxProfile with the station's ``transactionId`` (a string) while a transaction runs on
  the EVSE, else a TxDefaultProfile;
- ``chargingSchedule`` is a list in 2.0.1: one schedule whose ``id`` is the profile's id
  (unique per station, as K01.FR.26 wants), ``chargingRateUnit`` and one period from 0
  with ``numberPhases``;
- ClearChargingProfile names the profile with ``chargingProfileId`` (1.6: ``id``).
"""

from __future__ import annotations

from typing import Any

from bridge.charging_limits import (
    CONNECTOR_STACK_LEVEL,
    FAILSAFE,
    FAILSAFE_STACK_LEVEL,
    TX_DEFAULT,
    TX_PROFILE,
    ProfileMessages,
    TransactionId,
    Wanted,
    profile_id,
)

__all__ = ["OCPP201", "STATION_MAX", "clear_payload", "profile_payload"]

STATION_MAX = "ChargingStationMaxProfile"


def profile_payload(
    slot: str, wanted: Wanted, transaction_id: TransactionId | None
) -> dict[str, Any]:
    """SetChargingProfileRequest (OCPP 2.0.1 part 2, 1.52) for a slot."""
    if slot == FAILSAFE:
        evse_id, purpose, level = 0, STATION_MAX, FAILSAFE_STACK_LEVEL
    else:
        evse_id = int(slot)
        purpose = TX_PROFILE if transaction_id is not None else TX_DEFAULT
        level = CONNECTOR_STACK_LEVEL
    number = profile_id(slot)
    profile: dict[str, Any] = {
        "id": number,
        "stackLevel": level,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": "Absolute",
        "chargingSchedule": [
            {
                "id": number,
                "chargingRateUnit": wanted.unit,
                "chargingSchedulePeriod": [
                    {"startPeriod": 0, "limit": wanted.limit, "numberPhases": wanted.phases}
                ],
            }
        ],
    }
    if purpose == TX_PROFILE:
        profile["transactionId"] = str(transaction_id)
    return {"evseId": evse_id, "chargingProfile": profile}


def clear_payload(number: int) -> dict[str, Any]:
    """ClearChargingProfileRequest (part 2, 1.8) of one profile by its id."""
    return {"chargingProfileId": number}


OCPP201 = ProfileMessages(STATION_MAX, profile_payload, clear_payload)
