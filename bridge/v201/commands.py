"""Operator commands for OCPP 2.0.1 stations: the command names, the 2.0.1 action of each,
and what an answered command changed on the station (mirrored into the shadow).

A name means the same thing in both versions (``reset`` resets, ``remote-start`` starts a
session), so operators, rules and the dashboard use one vocabulary; the payload is the
request of the connected station's version, checked against that version's schema before
it is sent (:meth:`bridge.v201.endpoints.Endpoint201.request`). The names only 2.0.1 has
are its own calls (``get-variables``). ``docs/ocpp201.md`` ("Commands") is the contract.

One exception to "the payload is the station's version": ``change-availability`` also
takes the 1.6 body ``{connectorId, type}`` (:func:`adapt`). A rule's ``command`` action
(docs/rules.md) is published to every charger it fires for without knowing the charger's
version, and a 1.6 connector N is the 2.0.1 EVSE N (the port identity), so the mapping is
exact.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.commands import Mirror
from bridge.v201.devicemodel import VariableKey
from bridge.v201.reconcilers import StationReconciler
from twin.schemas import SECRET_KEYS

# Command name -> OCPP 2.0.1 action. ``get-diagnostics`` is the 1.6 name of the upload the
# API asks for (it fills in GetLog's DiagnosticsLog and the upload location); ``get-log``
# is GetLog as the operator writes it.
COMMANDS: dict[str, str] = {
    "reset": "Reset",
    "unlock": "UnlockConnector",
    "trigger": "TriggerMessage",
    "clear-cache": "ClearCache",
    "change-availability": "ChangeAvailability",
    "remote-start": "RequestStartTransaction",
    "remote-stop": "RequestStopTransaction",
    "data-transfer": "DataTransfer",
    "get-diagnostics": "GetLog",
    "get-log": "GetLog",
    "get-variables": "GetVariables",
    "reserve-now": "ReserveNow",
    "cancel-reservation": "CancelReservation",
    "get-composite-schedule": "GetCompositeSchedule",
    "set-charging-profile": "SetChargingProfile",
    "clear-charging-profile": "ClearChargingProfile",
    "get-local-list-version": "GetLocalListVersion",
    "send-local-list": "SendLocalList",
}

_AVAILABILITY_16 = frozenset({"connectorId", "type"})


def adapt(name: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The 2.0.1 request of a command whose payload may be written for 1.6.

    ``change-availability {connectorId: N, type: T}`` becomes ChangeAvailability
    ``{operationalStatus: T, evse: {id: N}}`` (no ``evse`` for N = 0, the station). Any
    other payload is the 2.0.1 request already (and is checked as such). ValueError: a 1.6
    body that cannot be mapped, with the reason.
    """
    if name != "change-availability" or "operationalStatus" in payload:
        return payload
    if not payload.keys() <= _AVAILABILITY_16 or "type" not in payload:
        return payload  # neither shape: the 2.0.1 schema check says what is wrong
    connector = payload.get("connectorId", 0)
    if isinstance(connector, bool) or not isinstance(connector, int) or connector < 0:
        raise ValueError(
            "change-availability: connectorId must be a whole number (0: the station), "
            f"not {connector!r}"
        )
    request: dict[str, Any] = {"operationalStatus": payload["type"]}
    if connector:
        request["evse"] = {"id": connector}
    return request


def mirror_201(reconciler: StationReconciler) -> Mirror:
    """What an answered 2.0.1 command changed or read goes into reported state, as
    :func:`bridge.commands.mirror_16` does for 1.6: GetVariables values (Accepted results)
    into ``reported.config`` under their device-model keys, an Accepted ChangeAvailability of
    the station or an EVSE into ``reported.availability``."""

    def mirror(action: str, payload: dict[str, Any], answer: dict[str, Any]) -> None:
        if action == "GetVariables":
            values = variable_values(answer)
            if values:
                reconciler.record_variables(values)
        elif action == "ChangeAvailability":
            evse = payload.get("evse")
            if isinstance(evse, Mapping) and evse.get("connectorId") is not None:
                return  # one connector of an EVSE: not a port of the shadow
            port = str(evse["id"]) if isinstance(evse, Mapping) else "0"
            reconciler.command_availability(
                port, str(payload["operationalStatus"]), str(answer.get("status"))
            )

    return mirror


def variable_values(answer: Mapping[str, Any]) -> dict[str, str]:
    """``reported.config`` values of a GetVariables answer: each Accepted result with a
    value, under its device-model key (never a secret, such as the Basic auth password)."""
    values: dict[str, str] = {}
    for result in answer.get("getVariableResult") or []:
        if not isinstance(result, Mapping) or result.get("attributeStatus") != "Accepted":
            continue
        value = result.get("attributeValue")
        if not isinstance(value, str):
            continue
        key = VariableKey.of(
            result["component"], result["variable"], result.get("attributeType")
        ).text()
        if key not in SECRET_KEYS:
            values[key] = value
    return values
