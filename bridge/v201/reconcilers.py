"""Desired state for an OCPP 2.0.1 station: SetVariables and ChangeAvailability (2.0.1 shape).

The 1.6 :class:`bridge.reconcilers.Reconciler` decides *when* (one run at a time, after the
station is accepted, a refusal not retried until desired changes, ``reported.refused``);
this subclass decides *how* for 2.0.1:

- ``desired.config`` keys in the device-model scheme (:mod:`bridge.v201.devicemodel`) go
  out as SetVariables, one variable per call. Before anything is sent, a key that does not
  follow the scheme, a variable the device model says is ReadOnly, or a value of the wrong
  data type or outside its limits is refused as ``Invalid`` with the reason. Each
  ``attributeStatus`` is recorded as for 1.6: Accepted and RebootRequired put the value in
  ``reported.config`` (RebootRequired also sets ``reported.rebootRequired``); Rejected,
  UnknownComponent, UnknownVariable and NotSupportedAttributeType go to
  ``reported.refused.config`` with the station's ``reasonCode`` when it gives one.
- ``desired.availability`` ``"0"`` (the station) or ``"N"`` (EVSE N, the port) goes out as
  ChangeAvailability with ``operationalStatus`` (OCPP 2.0.1 G03, G04).
- ``desired.firmware`` goes out as the 2.0.1 UpdateFirmware, its progress followed by
  ``requestId`` (:mod:`bridge.v201.firmwares`).
- ``desired.chargingLimit`` goes out as 2.0.1 SetChargingProfile / ClearChargingProfile
  (:mod:`bridge.v201.charging_profiles`), decided as for 1.6 (:mod:`bridge.charging_limits`);
  the running transactions come from TransactionEvent Started / Ended.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from bridge.errors import CallErrorReceived, InvalidCallError, InvalidResponseError
from bridge.reconcilers import Reconciler, config_text
from bridge.times import now
from bridge.v201.charging_profiles import OCPP201
from bridge.v201.devicemodel import (
    KeyError201,
    is_device_model_key,
    parse_key,
    value_problem,
)
from bridge.v201.firmwares import StationFirmware
from chargetwin.database import DatabaseError

log = logging.getLogger(__name__)


class StationReconciler(Reconciler):
    """The 1.6 reconciler's schedule with 2.0.1 calls (see the module docstring)."""

    firmware_reconciler = StationFirmware
    profile_messages = OCPP201

    def __init__(
        self,
        *args: Any,
        stored_model: Callable[[], Awaitable[dict[str, Any]]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        # Mutability and data type per key, from the last FullInventory: read on this
        # connection after a boot, else (a station that reconnected without booting) from
        # the shadow's reported.deviceModel, once, when a config delta first needs it.
        self.device_model: dict[str, dict[str, Any]] = {}
        self._stored_model = stored_model

    async def _load_stored_model(self) -> None:
        loader, self._stored_model = self._stored_model, None
        if loader is None or self.device_model:
            return
        try:
            model = await loader()
        except DatabaseError as exc:
            log.warning("%s: stored device model unreadable: %s", self.charger_id, exc)
            return
        self.device_model = {k: v for k, v in model.items() if isinstance(v, dict)}

    def record_device_model(self, config: dict[str, str], model: dict[str, dict[str, Any]]) -> None:
        """A whole device model read after a boot: what the station has now."""
        self._stored_model = None
        self._known = {leaf: v for leaf, v in self._known.items() if leaf[0] != "config"}
        for key, value in config.items():
            self._known[("config", key)] = value
        self.device_model = dict(model)

    def record_variables(self, values: dict[str, str]) -> None:
        """Values a station told in a GetVariables answer (a ``get-variables`` command): into
        ``reported.config``, as a 1.6 GetConfiguration answer is, without replacing the rest."""
        for key, value in values.items():
            self._known[("config", key)] = value
        self._reporter.report(self.charger_id, {"config": dict(values)}, now())

    async def _apply_config(self, key: str, desired: Any) -> None:
        value = config_text(desired)
        if value is None or not is_device_model_key(key):
            shown = value if value is not None else str(desired)
            why = (
                "a config value must be a scalar"
                if value is None
                else "OCPP 2.0.1: config keys are COMPONENT/VARIABLE (docs/ocpp201.md)"
            )
            if self._refused.get(("config", key)) != shown:
                self._refused[("config", key)] = shown
                self.record_config(key, shown, "Invalid", why)
            return
        if self._settled("config", key, value):
            return
        await self._load_stored_model()
        try:
            target = parse_key(key)
        except KeyError201 as exc:
            self._refused[("config", key)] = value
            self.record_config(key, value, "Invalid", str(exc))
            return
        meta = self.device_model.get(key)
        problem = value_problem(value, meta) if meta is not None else None
        if problem is not None:
            self._refused[("config", key)] = value
            self.record_config(key, value, "Invalid", problem)
            return
        data: dict[str, Any] = {
            "attributeValue": value,
            "component": target.component_payload(),
            "variable": target.variable_payload(),
        }
        if target.attribute != "Actual":
            data["attributeType"] = target.attribute
        log.info("%s: SetVariables %s=%r", self.charger_id, key, value)
        try:
            answer = await self._request("SetVariables", {"setVariableData": [data]})
        except InvalidCallError as exc:
            self.record_config(key, value, "Invalid", str(exc))
            return
        except CallErrorReceived as exc:
            self.record_config(key, value, "CallError", exc.error_code)
            return
        except InvalidResponseError as exc:
            self.record_config(key, value, "InvalidResponse", str(exc))
            return
        results = answer.get("setVariableResult") or [{}]
        result = results[0] if isinstance(results[0], dict) else {}
        status = str(result.get("attributeStatus"))
        info = result.get("attributeStatusInfo") or {}
        reason = info.get("reasonCode") if isinstance(info, dict) else None
        self.record_config(key, value, status, None if reason is None else str(reason))

    async def _apply_availability(self, connector: str, desired: Any) -> None:
        value = str(desired)
        if self._settled("availability", connector, value):
            return
        try:
            evse_id = int(connector)
        except ValueError:
            self.record_availability(connector, value, "Invalid", "EVSE must be a number")
            return
        payload: dict[str, Any] = {"operationalStatus": value}
        if evse_id != 0:
            payload["evse"] = {"id": evse_id}
        log.info("%s: ChangeAvailability %s=%s", self.charger_id, connector, value)
        try:
            answer = await self._request("ChangeAvailability", payload)
        except InvalidCallError as exc:
            self.record_availability(connector, value, "Invalid", str(exc))
            return
        except CallErrorReceived as exc:
            self.record_availability(connector, value, "CallError", exc.error_code)
            return
        except InvalidResponseError as exc:
            self.record_availability(connector, value, "InvalidResponse", str(exc))
            return
        self.record_availability(connector, value, str(answer.get("status")))
