"""The device model of a simulated OCPP 2.0.1 station (OCPP 2.0.1 part 1, section 4; part 2,
appendix 3 for the standardized components and variables).

A station describes itself as components (``OCPPCommCtrlr``, ``SampledDataCtrlr``,
``TxCtrlr``, ``EVSE`` 1, ``Connector`` 1 of EVSE 1...) holding variables, each with one
value per attribute type (Actual, Target, MinSet, MaxSet), a mutability (ReadOnly,
ReadWrite, WriteOnly) and characteristics (dataType, unit, limits, valuesList). The
central system reads it with GetBaseReport (answered by NotifyReport parts, here
:meth:`DeviceModel.report`) and GetVariables, and changes it with SetVariables; both are
answered per variable with the statuses of part 2 (Accepted, Rejected, RebootRequired,
UnknownComponent, UnknownVariable, NotSupportedAttributeType).

The model is what a station keeps across connections, like a 1.6 charger's configuration
(:mod:`simulator.configurations`); the station reads its own settings from it
(``OCPPCommCtrlr/HeartbeatInterval``, ``SampledDataCtrlr/TxUpdatedInterval``...).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from simulator.options import ChargerModel

__all__ = [
    "MEASURANDS",
    "PASSWORD_LENGTH",
    "Address",
    "DeviceModel",
    "Variable",
    "report_parts",
    "station_device_model",
]

# Measurands the simulated meter can sample (simulator.meters), the valuesList of the
# SampledDataCtrlr measurand lists.
MEASURANDS = (
    "Energy.Active.Import.Register",
    "Power.Active.Import",
    "Current.Import",
    "Voltage",
    "Temperature",
    "SoC",
)
TX_POINTS = (
    "ParkingBayOccupancy",
    "EVConnected",
    "Authorized",
    "DataSigned",
    "PowerPathClosed",
    "EnergyTransfer",
)
AVAILABILITY_STATES = ("Available", "Occupied", "Reserved", "Unavailable", "Faulted")
ATTRIBUTE_TYPES = ("Actual", "Target", "MinSet", "MaxSet")
# A password of SecurityProfile 1/2: 16 to 40 characters (part 2, SecurityCtrlr).
PASSWORD_LENGTH = (16, 40)


@dataclass(frozen=True, slots=True)
class Address:
    """Where a variable is: component (name, instance, EVSE, connector) and variable."""

    component: str
    variable: str
    evse: int | None = None
    connector: int | None = None
    component_instance: str | None = None
    variable_instance: str | None = None

    @classmethod
    def of(cls, component: dict[str, Any], variable: dict[str, Any]) -> Address:
        """From a request's ComponentType and VariableType, in the snake_case the ``ocpp``
        library hands to a handler."""
        evse = component.get("evse") or {}
        return cls(
            component=str(component["name"]),
            variable=str(variable["name"]),
            evse=evse.get("id"),
            connector=evse.get("connector_id"),
            component_instance=component.get("instance"),
            variable_instance=variable.get("instance"),
        )

    def component_type(self) -> dict[str, Any]:
        """The ComponentType of a message (camelCase, as sent)."""
        component: dict[str, Any] = {"name": self.component}
        if self.component_instance is not None:
            component["instance"] = self.component_instance
        if self.evse is not None:
            evse: dict[str, Any] = {"id": self.evse}
            if self.connector is not None:
                evse["connectorId"] = self.connector
            component["evse"] = evse
        return component

    def variable_type(self) -> dict[str, Any]:
        variable: dict[str, Any] = {"name": self.variable}
        if self.variable_instance is not None:
            variable["instance"] = self.variable_instance
        return variable

    def __str__(self) -> str:
        where = self.component
        if self.evse is not None:
            where += f"@{self.evse}" + ("" if self.connector is None else f".{self.connector}")
        return f"{where}/{self.variable}"


@dataclass(slots=True)
class Variable:
    """One variable: a value per attribute type and what the station says about them."""

    address: Address
    data_type: str  # string, decimal, integer, dateTime, boolean, OptionList, ...
    values: dict[str, str | None]  # attribute type -> value (None: WriteOnly, never read)
    mutability: str = "ReadWrite"
    unit: str | None = None
    min_limit: float | None = None
    max_limit: float | None = None
    values_list: tuple[str, ...] = ()
    # A change takes effect after a reboot only: SetVariables answers RebootRequired.
    reboot_required: bool = False
    persistent: bool = True
    constant: bool = False

    def report_data(self) -> dict[str, Any]:
        """The ReportDataType of a NotifyReport (part 2, 2.44)."""
        attributes = []
        for kind, value in self.values.items():
            attribute: dict[str, Any] = {
                "type": kind,
                "mutability": self.mutability,
                "persistent": self.persistent,
                "constant": self.constant,
            }
            if value is not None and self.mutability != "WriteOnly":
                attribute["value"] = value
            attributes.append(attribute)
        characteristics: dict[str, Any] = {
            "dataType": self.data_type,
            "supportsMonitoring": False,
        }
        if self.unit is not None:
            characteristics["unit"] = self.unit
        if self.min_limit is not None:
            characteristics["minLimit"] = self.min_limit
        if self.max_limit is not None:
            characteristics["maxLimit"] = self.max_limit
        if self.values_list:
            characteristics["valuesList"] = ",".join(self.values_list)
        return {
            "component": self.address.component_type(),
            "variable": self.address.variable_type(),
            "variableAttribute": attributes,
            "variableCharacteristics": characteristics,
        }

    def refusal(self, value: str) -> str | None:
        """Why ``value`` cannot be this variable's (None: it can)."""
        kind = self.data_type
        if kind in ("integer", "decimal"):
            try:
                number = int(value) if kind == "integer" else float(value)
            except ValueError:
                return f"not an {kind}" if kind == "integer" else "not a decimal"
            if not math.isfinite(number):
                return "not a finite number"
            if self.min_limit is not None and number < self.min_limit:
                return f"below {self.min_limit:g}"
            if self.max_limit is not None and number > self.max_limit:
                return f"above {self.max_limit:g}"
        elif kind == "boolean":
            if value not in ("true", "false"):
                return "not true or false"
        elif kind == "dateTime":
            try:
                datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                return "not a dateTime"
        elif kind == "OptionList":
            if value not in self.values_list:
                return "not in the valuesList"
        elif kind in ("MemberList", "SequenceList"):
            members = [item.strip() for item in value.split(",")] if value else []
            if any(item not in self.values_list for item in members):
                return "a member is not in the valuesList"
        elif self.max_limit is not None and len(value) > self.max_limit:
            return f"longer than {self.max_limit:g} characters"
        elif self.min_limit is not None and len(value) < self.min_limit:
            return f"shorter than {self.min_limit:g} characters"
        return None


Listener = Callable[[Address], None]


class DeviceModel:
    """A station's variables by address, with the reads and writes of part 2, B05-B08."""

    def __init__(self, variables: list[Variable]) -> None:
        self._variables = {variable.address: variable for variable in variables}
        self._components = {
            (v.address.component, v.address.component_instance, v.address.evse, v.address.connector)
            for v in variables
        }
        self._listeners: list[Listener] = []

    def __len__(self) -> int:
        return len(self._variables)

    def __iter__(self) -> Iterator[Variable]:
        return iter(self._variables.values())

    def on_change(self, listener: Listener) -> None:
        self._listeners.append(listener)

    # -- the station's own reads and writes ----------------------------------------------

    def value(self, component: str, variable: str, evse: int | None = None) -> str:
        """The Actual value of a variable the station itself defines ('' when unset)."""
        found = self._variables.get(Address(component, variable, evse))
        return (found.values.get("Actual") or "") if found is not None else ""

    def integer(self, component: str, variable: str) -> int:
        try:
            return int(self.value(component, variable))
        except ValueError:
            return 0

    def members(self, component: str, variable: str) -> list[str]:
        return [item for item in self.value(component, variable).split(",") if item]

    def boolean(self, component: str, variable: str) -> bool:
        return self.value(component, variable) == "true"

    def update(self, address: Address, value: str) -> None:
        """The station changes a value itself (a status, the clock): no checks, no listeners."""
        found = self._variables.get(address)
        if found is not None:
            found.values["Actual"] = value

    # -- the central system's reads and writes -------------------------------------------

    def get(self, address: Address, kind: str = "Actual") -> tuple[str, str | None]:
        """GetVariables for one variable: (attributeStatus, attributeValue)."""
        found, status = self._find(address, kind)
        if found is None:
            return status, None
        if found.mutability == "WriteOnly":
            return "Rejected", None
        return "Accepted", found.values[kind] or ""

    def set(self, address: Address, value: str, kind: str = "Actual") -> tuple[str, str | None]:
        """SetVariables for one variable: (attributeStatus, reason when not accepted)."""
        found, status = self._find(address, kind)
        if found is None:
            return status, None
        if found.mutability == "ReadOnly":
            return "Rejected", "ReadOnly"
        why = found.refusal(value)
        if why is not None:
            return "Rejected", why
        found.values[kind] = value
        for listener in self._listeners:
            listener(address)
        return ("RebootRequired" if found.reboot_required else "Accepted"), None

    def _find(self, address: Address, kind: str) -> tuple[Variable | None, str]:
        found = self._variables.get(address)
        if found is None:
            component = (
                address.component,
                address.component_instance,
                address.evse,
                address.connector,
            )
            known = component in self._components
            return None, "UnknownVariable" if known else "UnknownComponent"
        if kind not in found.values:
            return None, "NotSupportedAttributeType"
        return found, "Accepted"

    def report(self, base: str) -> list[dict[str, Any]]:
        """The ReportData of GetBaseReport ``base`` (part 2, B07): FullInventory every
        variable, ConfigurationInventory the ones the central system may write,
        SummaryInventory the availability of the station, its EVSEs and connectors."""
        chosen: list[Variable] = []
        for variable in self._variables.values():
            if base == "ConfigurationInventory" and variable.mutability == "ReadOnly":
                continue
            if base == "SummaryInventory" and variable.address.variable != "AvailabilityState":
                continue
            chosen.append(variable)
        return [variable.report_data() for variable in chosen]


def _var(
    component: str,
    variable: str,
    data_type: str,
    value: str | None,
    *,
    evse: int | None = None,
    connector: int | None = None,
    component_instance: str | None = None,
    variable_instance: str | None = None,
    **details: Any,
) -> Variable:
    address = Address(component, variable, evse, connector, component_instance, variable_instance)
    values: dict[str, str | None] = {"Actual": value}
    values.update(details.pop("more_values", {}))
    return Variable(address, data_type, values, **details)


def station_device_model(
    model: ChargerModel,
    *,
    charger_id: str,
    serial_number: str,
    firmware_version: str,
    heartbeat_s: int,
    meter_s: int,
) -> DeviceModel:
    """The device model of a station of ``model``: the controllers a real 2.0.1 station
    reports (part 2, appendix 3), its EVSEs and their connectors."""
    ro = "ReadOnly"
    measurands = ",".join(m for m in MEASURANDS if m != "Temperature")
    energy = "Energy.Active.Import.Register"
    variables = [
        _var("ChargingStation", "Model", "string", model.model, mutability=ro, constant=True),
        _var("ChargingStation", "VendorName", "string", model.vendor, mutability=ro, constant=True),
        _var("ChargingStation", "SerialNumber", "string", serial_number, mutability=ro),
        _var("ChargingStation", "FirmwareVersion", "string", firmware_version, mutability=ro),
        _var(
            "ChargingStation", "AvailabilityState", "OptionList", "Available",
            mutability=ro, values_list=AVAILABILITY_STATES, persistent=False,
        ),
        _var("ChargingStation", "Available", "boolean", "true", mutability=ro),
        _var("ChargingStation", "SupplyPhases", "integer", str(model.phases), mutability=ro),
        _var(
            "OCPPCommCtrlr", "HeartbeatInterval", "integer", str(heartbeat_s),
            unit="s", min_limit=1, max_limit=86_400,
        ),
        _var(
            "OCPPCommCtrlr", "MessageTimeout", "integer", "30",
            variable_instance="Default", unit="s", min_limit=1, max_limit=600,
        ),
        _var(
            "OCPPCommCtrlr", "MessageAttempts", "integer", "3",
            variable_instance="TransactionEvent", min_limit=0, max_limit=10,
        ),
        _var(
            "OCPPCommCtrlr", "MessageAttemptInterval", "integer", "10",
            variable_instance="TransactionEvent", unit="s", min_limit=0, max_limit=3600,
        ),
        _var("OCPPCommCtrlr", "NetworkProfileConnectionAttempts", "integer", "3", min_limit=1),
        _var("OCPPCommCtrlr", "OfflineThreshold", "integer", "300", unit="s", min_limit=0),
        _var("OCPPCommCtrlr", "ResetRetries", "integer", "1", min_limit=0, max_limit=10),
        _var("OCPPCommCtrlr", "UnlockOnEVSideDisconnect", "boolean", "true"),
        _var(
            "OCPPCommCtrlr", "WebSocketPingInterval", "integer", "0",
            unit="s", min_limit=0, max_limit=3600, reboot_required=True,
        ),
        _var(
            "OCPPCommCtrlr", "FileTransferProtocols", "MemberList", "HTTP,HTTPS,FTP",
            mutability=ro, values_list=("FTP", "FTPS", "HTTP", "HTTPS", "SFTP"),
        ),
        _var("SampledDataCtrlr", "Enabled", "boolean", "true"),
        _var(
            "SampledDataCtrlr", "TxStartedMeasurands", "MemberList", energy,
            values_list=MEASURANDS,
        ),
        _var(
            "SampledDataCtrlr", "TxUpdatedMeasurands", "MemberList", measurands,
            values_list=MEASURANDS,
        ),
        _var(
            "SampledDataCtrlr", "TxUpdatedInterval", "integer", str(meter_s),
            unit="s", min_limit=0, max_limit=3600,
        ),
        _var("SampledDataCtrlr", "TxEndedMeasurands", "MemberList", energy, values_list=MEASURANDS),
        _var("SampledDataCtrlr", "TxEndedInterval", "integer", "0", unit="s", min_limit=0),
        _var("AlignedDataCtrlr", "Measurands", "MemberList", energy, values_list=MEASURANDS),
        _var("AlignedDataCtrlr", "Interval", "integer", "0", unit="s", min_limit=0),
        _var("TxCtrlr", "EVConnectionTimeOut", "integer", "60", unit="s", min_limit=0),
        _var("TxCtrlr", "StopTxOnEVSideDisconnect", "boolean", "true", mutability=ro),
        _var("TxCtrlr", "StopTxOnInvalidId", "boolean", "true"),
        _var("TxCtrlr", "MaxEnergyOnInvalidId", "integer", "0", unit="Wh", min_limit=0),
        _var("TxCtrlr", "TxStartPoint", "MemberList", "EVConnected", values_list=TX_POINTS),
        _var("TxCtrlr", "TxStopPoint", "MemberList", "EVConnected", values_list=TX_POINTS),
        _var("AuthCtrlr", "Enabled", "boolean", "true"),
        _var("AuthCtrlr", "AuthorizeRemoteStart", "boolean", "true"),
        _var("AuthCtrlr", "LocalAuthorizeOffline", "boolean", "true"),
        _var("AuthCtrlr", "LocalPreAuthorize", "boolean", "false"),
        _var("AuthCacheCtrlr", "Enabled", "boolean", "true"),
        _var("SecurityCtrlr", "SecurityProfile", "integer", "1", mutability=ro),
        _var("SecurityCtrlr", "Identity", "string", charger_id, mutability=ro),
        _var(
            "SecurityCtrlr", "OrganizationName", "string", "ChargeTwin Simulator",
            max_limit=50, reboot_required=True,
        ),
        _var(
            "SecurityCtrlr", "BasicAuthPassword", "string", None, mutability="WriteOnly",
            min_limit=PASSWORD_LENGTH[0], max_limit=PASSWORD_LENGTH[1],
        ),
        _var("SmartChargingCtrlr", "Enabled", "boolean", "false"),
        _var("ReservationCtrlr", "Enabled", "boolean", "false"),
        _var("LocalAuthListCtrlr", "Enabled", "boolean", "false"),
        _var(
            "DeviceDataCtrlr", "ItemsPerMessage", "integer", "20",
            variable_instance="GetReport", mutability=ro,
        ),
        _var(
            "DeviceDataCtrlr", "ItemsPerMessage", "integer", "20",
            variable_instance="GetVariables", mutability=ro,
        ),
        _var(
            "DeviceDataCtrlr", "ItemsPerMessage", "integer", "20",
            variable_instance="SetVariables", mutability=ro,
        ),
        _var("ClockCtrlr", "TimeSource", "SequenceList", "Heartbeat",
             values_list=("Heartbeat", "NTP", "GPS", "RealTimeClock", "MobileNetwork")),
    ]  # fmt: skip
    for evse in range(1, model.connectors + 1):
        power = f"{model.max_power_w:.0f}"
        variables += [
            _var(
                "EVSE", "AvailabilityState", "OptionList", "Available", evse=evse,
                mutability=ro, values_list=AVAILABILITY_STATES, persistent=False,
            ),
            _var("EVSE", "Available", "boolean", "true", evse=evse, mutability=ro),
            _var(
                "EVSE", "Power", "decimal", "0", evse=evse, mutability=ro, unit="W",
                min_limit=0, max_limit=model.max_power_w, more_values={"MaxSet": power},
            ),
            _var("EVSE", "SupplyPhases", "integer", str(model.phases), evse=evse, mutability=ro),
            _var(
                "Connector", "AvailabilityState", "OptionList", "Available", evse=evse,
                connector=1, mutability=ro, values_list=AVAILABILITY_STATES, persistent=False,
            ),
            _var(
                "Connector", "Available", "boolean", "true",
                evse=evse, connector=1, mutability=ro,
            ),
            _var(
                "Connector", "ConnectorType", "string",
                "cType2" if model.phases == 3 else "sType2",
                evse=evse, connector=1, mutability=ro, constant=True,
            ),
            _var(
                "Connector", "SupplyPhases", "integer", str(model.phases),
                evse=evse, connector=1, mutability=ro,
            ),
        ]  # fmt: skip
    return DeviceModel(variables)


def report_parts(data: list[dict[str, Any]], per_part: int) -> list[list[dict[str, Any]]]:
    """``data`` cut in NotifyReport parts of at most ``per_part`` entries (at least one,
    possibly empty, part: a report always has a last part)."""
    size = max(1, per_part)
    return [data[i : i + size] for i in range(0, len(data), size)] or [[]]
