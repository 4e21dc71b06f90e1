"""Operator commands for OCPP 2.0.1 stations: the command names and the 2.0.1 action of each.

A name means the same thing in both versions (``reset`` resets, ``remote-start`` starts a
session), so operators, rules and the dashboard use one vocabulary; the payload is the
request of the connected station's version, checked against that version's schema before
it is sent (:meth:`bridge.v201.endpoints.Endpoint201.request`). The names only 2.0.1 has
are its own calls (``get-variables``). ``docs/ocpp201.md`` ("Commands") is the contract.
"""

from __future__ import annotations

# Command name -> OCPP 2.0.1 action. ``get-diagnostics`` is the 1.6 name of the upload the
# API asks for (it fills in GetLog's DiagnosticsLog and the upload location); ``get-log``
# is GetLog as the operator writes it.
COMMANDS: dict[str, str] = {
    "reset": "Reset",
    "unlock": "UnlockConnector",
    "trigger": "TriggerMessage",
    "clear-cache": "ClearCache",
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
