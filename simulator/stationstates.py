"""What an OCPP 2.0.1 station is beyond a :class:`simulator.states.Charger`.

The same identity, connectors, meters, fault switches and counters, plus what 2.0.1 adds:
the device model (:mod:`simulator.devicemodels`), per-transaction ``seqNo`` counters, the
reason of the next BootNotification, and the messages whose shape differs from 1.6:
StatusNotification per EVSE and connector, MeterValues with ``evseId`` and numeric values,
and faults reported as NotifyEvent beside the Faulted status (part 2, N07/N08).

Each 1.6 connector of the shared :class:`simulator.connectors.Connector` state is one
EVSE here, with one connector (``evseId`` N, ``connectorId`` 1): the port identity the
platform uses for both versions (docs/ocpp201.md, "Port identity").
"""

from __future__ import annotations

import asyncio
from typing import Any

from ocpp.v16.enums import ChargePointErrorCode, ChargePointStatus, ReadingContext
from ocpp.v201 import call

from simulator.connectors import Connector
from simulator.devicemodels import Address, station_device_model
from simulator.meters import utc_now
from simulator.options import SimulatorOptions
from simulator.states import Charger

__all__ = ["CONNECTOR_ID", "Station", "connector_status", "meter_value"]

# Every simulated EVSE has one connector.
CONNECTOR_ID = 1

# 1.6 ChargePointStatus of the shared connector state -> 2.0.1 ConnectorStatusEnumType.
OCCUPIED = frozenset(
    {
        ChargePointStatus.preparing,
        ChargePointStatus.charging,
        ChargePointStatus.suspended_ev,
        ChargePointStatus.suspended_evse,
        ChargePointStatus.finishing,
    }
)


def connector_status(connector: Connector) -> str:
    """The 2.0.1 ConnectorStatus of a connector's state (part 2, 3.25)."""
    status = connector.status
    if status == ChargePointStatus.faulted:
        return "Faulted"
    if status == ChargePointStatus.unavailable:
        return "Unavailable"
    if status == ChargePointStatus.reserved:
        return "Reserved"
    if status in OCCUPIED:
        return "Occupied"
    return "Available"


def meter_value(connector: Connector, measurands: list[str], context: str) -> dict[str, Any]:
    """A 2.0.1 MeterValueType (part 2, 2.39) from the connector's meter.

    The meter model builds 1.6 SampledValues; 2.0.1 keeps the same measurands, contexts,
    locations and phases but has a numeric ``value`` and ``unitOfMeasure`` instead of
    ``unit`` and ``format``.
    """
    sample = connector.meter.sample(measurands, ReadingContext(context))
    values = []
    for entry in sample["sampledValue"]:
        value: dict[str, Any] = {
            "value": float(entry["value"]),
            "context": entry["context"],
            "measurand": entry["measurand"],
            "location": entry["location"],
            "unitOfMeasure": {"unit": entry["unit"]},
        }
        if "phase" in entry:
            value["phase"] = entry["phase"]
        values.append(value)
    return {"timestamp": sample["timestamp"], "sampledValue": values}


class Station(Charger):
    """One 2.0.1 charging station's state; the connection loop sits above it."""

    def __init__(self, index: int, options: SimulatorOptions) -> None:
        super().__init__(index, options)
        meter_s = self.config.integer("MeterValueSampleInterval")
        self.device_model = station_device_model(
            self.model,
            charger_id=self.id,
            serial_number=self.serial_number,
            firmware_version=self.firmware_version,
            heartbeat_s=options.heartbeat_interval_s,
            meter_s=meter_s,
        )
        # BootNotification reason (part 2, 3.7): PowerUp first, then what caused a reboot.
        self.boot_reason = "PowerUp"
        # Set by TriggerMessage BootNotification while the boot is Pending.
        self.boot_wanted = asyncio.Event()
        # A firmware update that rebooted to install: Installed is reported after the boot.
        self.installed_request_id: int | None = None
        self.firmware_request_id: int | None = None
        self.firmware_state = "Idle"  # FirmwareStatusEnumType of the last notification
        self.log_status = "Idle"
        self.log_request_id: int | None = None
        self._seq_no: dict[int, int] = {}
        self._event_id = 0
        # The problem each connector last reported with NotifyEvent (None: none).
        self._problems: dict[int, str | None] = {}

    # -- transactions --------------------------------------------------------------------

    def transaction_id(self, connector: Connector) -> str | None:
        """The TransactionId (a string in 2.0.1) of the connector's open transaction."""
        number = connector.transaction_id
        return None if number is None else f"{self.id}-{number:08X}"

    def next_seq_no(self, connector: Connector) -> int:
        """seqNo of the next TransactionEvent of the connector's transaction (part 2, E01):
        0 for Started, then one more per message."""
        number = connector.transaction_id
        assert number is not None
        seq = self._seq_no.get(number, 0)
        self._seq_no[number] = seq + 1
        return seq

    def forget_transaction(self, connector: Connector) -> None:
        if connector.transaction_id is not None:
            self._seq_no.pop(connector.transaction_id, None)

    # -- status and faults ---------------------------------------------------------------

    async def send_status(self, connector: Connector) -> None:
        """StatusNotification (part 2, G01) for the EVSE's connector; a fault that appeared
        or cleared is announced first with NotifyEvent, as stations do for a Problem."""
        if connector.id == 0:
            return  # 2.0.1 reports connectors only; the station's state is theirs
        status = connector_status(connector)
        self._update_availability(connector, status)
        problem = self._problem(connector)
        if problem != self._problems.get(connector.id):
            previous = self._problems.get(connector.id)
            self._problems[connector.id] = problem
            await self._notify_problem(connector, problem or previous or "", cleared=not problem)
        await self.call(
            call.StatusNotification(
                timestamp=utc_now(),
                connector_status=status,
                evse_id=connector.id,
                connector_id=CONNECTOR_ID,
            )
        )

    def _problem(self, connector: Connector) -> str | None:
        code = connector.error_code
        return None if code == ChargePointErrorCode.no_error else str(code)

    async def _notify_problem(self, connector: Connector, tech_code: str, *, cleared: bool) -> None:
        """NotifyEvent of the connector's Problem variable (part 2, N07): a HardWired
        notification with the fault as techCode, ``cleared`` when it is gone."""
        self._event_id += 1
        await self.call(
            call.NotifyEvent(
                generated_at=utc_now(),
                seq_no=0,
                event_data=[
                    {
                        "eventId": self._event_id,
                        "timestamp": utc_now(),
                        "trigger": "Delta",
                        "actualValue": "false" if cleared else "true",
                        "techCode": tech_code[:50],
                        "cleared": cleared,
                        "eventNotificationType": "HardWiredNotification",
                        "component": {
                            "name": "Connector",
                            "evse": {"id": connector.id, "connectorId": CONNECTOR_ID},
                        },
                        "variable": {"name": "Problem"},
                    }
                ],
            )
        )

    def _update_availability(self, connector: Connector, status: str) -> None:
        model = self.device_model
        for address in (
            Address("EVSE", "AvailabilityState", connector.id),
            Address("Connector", "AvailabilityState", connector.id, CONNECTOR_ID),
        ):
            model.update(address, status)
        model.update(Address("EVSE", "Power", connector.id), f"{connector.meter.power_w:.0f}")

    # -- meter values --------------------------------------------------------------------

    def measurands(self, variable: str) -> list[str]:
        """A SampledDataCtrlr measurand list (TxStartedMeasurands, TxUpdatedMeasurands...)."""
        return self.device_model.members("SampledDataCtrlr", variable)

    async def send_meter_sample(self, connector: Connector, context: ReadingContext) -> None:
        """MeterValues (part 2, J01) outside a transaction or triggered; none while the
        power meter is broken."""
        if connector.meter_failed or connector.id == 0:
            return
        sample = meter_value(connector, self.measurands("TxUpdatedMeasurands"), context.value)
        await self.call(call.MeterValues(evse_id=connector.id, meter_value=[sample]))
