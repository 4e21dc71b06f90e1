"""A simulated OCPP 2.0.1 charging station: the 1.6 charger's connection loop, a 2.0.1 boot.

The connection loop, reconnect backoff, fault injection and counters are the 1.6
charger's (:class:`simulator.chargers.SimulatedCharger`); the state and messages are a
2.0.1 station's (:class:`simulator.stationstates.Station`). What differs is the
subprotocol (``ocpp2.0.1``), the OCPP endpoint (:mod:`simulator.stationlinks`) and the
boot (part 2, B01-B03):

- BootNotification with ``chargingStation`` and ``reason`` (PowerUp, RemoteReset after a
  Reset, FirmwareUpdate after an installation, Triggered when the CSMS asked for it);
- Pending: the station answers the CSMS's requests (GetBaseReport, GetVariables,
  SetVariables...) and boots again when the CSMS triggers it (TriggerMessage
  BootNotification) or after the ``interval`` of the answer; Rejected: after the interval;
- Accepted: the interval becomes ``OCPPCommCtrlr/HeartbeatInterval``; a transaction the
  restart interrupted ends with ``offline`` set; each EVSE's connector reports its status;
  an installed firmware is reported Installed; heartbeats and sessions start.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ocpp.charge_point import ChargePoint
from ocpp.v16.enums import ChargePointStatus, ReadingContext
from ocpp.v201 import call
from websockets.asyncio.client import ClientConnection
from websockets.typing import Subprotocol

from simulator import stationupdates, transactions
from simulator.chargers import SimulatedCharger, ocpp_logger
from simulator.connectors import Connector
from simulator.devicemodels import Address
from simulator.options import SimulatorOptions
from simulator.states import ChargerState
from simulator.stationlinks import StationLink
from simulator.stationstates import Station

__all__ = ["SimulatedStation"]

HEARTBEAT = Address("OCPPCommCtrlr", "HeartbeatInterval")


class SimulatedStation(SimulatedCharger, Station):
    """One 2.0.1 charging station that connects, boots and operates until its fleet stops."""

    subprotocol = Subprotocol("ocpp2.0.1")

    def __init__(
        self,
        index: int,
        options: SimulatorOptions,
        observer: Callable[[SimulatedCharger, str], None] | None = None,
    ) -> None:
        super().__init__(index, options, observer)
        self.device_model.on_change(lambda _: self._config_changed(""))

    def ping_interval(self) -> float | None:
        return self.device_model.integer("OCPPCommCtrlr", "WebSocketPingInterval") or None

    def new_link(self, ws: ClientConnection) -> ChargePoint:
        return StationLink(
            self,
            ws,
            self.options.response_timeout_s,
            ocpp_logger,
            booted=lambda: self.state is ChargerState.BOOTED,
        )

    async def send_meter_sample(self, connector: Connector, context: ReadingContext) -> None:
        await Station.send_meter_sample(self, connector, context)

    async def _operate(self) -> None:
        while True:
            self.boot_wanted.clear()
            answer = await self.call(
                call.BootNotification(
                    charging_station={
                        "model": self.model.model,
                        "vendorName": self.model.vendor,
                        "serialNumber": self.serial_number,
                        "firmwareVersion": self.firmware_version,
                        "modem": {
                            "iccid": f"8949{self.index:015d}",
                            "imsi": f"26201{self.index:010d}",
                        },
                    },
                    reason=self.boot_reason,
                )
            )
            interval = int(answer.interval)
            if answer.status == "Accepted":
                if interval > 0:
                    self.device_model.update(HEARTBEAT, str(interval))
                break
            wait = interval if interval > 0 else self.options.boot_retry_s
            self.log.info("%s: boot %s; booting again in %s s", self.id, answer.status, wait)
            if answer.status == "Pending":
                # B02.FR.01: the CSMS may read and configure the station, then trigger the boot.
                await self.wait_for_boot_request(wait)
            else:
                await asyncio.sleep(wait)
        self.state = ChargerState.BOOTED
        self.boots += 1
        # A later reconnect without a restart is no power-up.
        self.boot_reason = "Unknown"
        for connector in self.connectors[1:]:
            if connector.transaction_id is not None:
                await transactions.end_transaction(
                    self, connector, self.pending_stop_reason, offline=True
                )
            if connector.stop is None and not connector.stuck:
                connector.phase = ChargePointStatus.available
        for connector in self.connectors[1:]:
            await self.send_status(connector)
        await stationupdates.report_installed(self)
        self.booted.set()
        self._notify("booted")
        self.spawn(self._heartbeats())
        if self.options.sessions.auto_sessions:
            for connector in self.connectors[1:]:
                self.spawn(self._auto_sessions(connector))

    async def wait_for_boot_request(self, seconds: float) -> None:
        """Until TriggerMessage BootNotification arrives, at most ``seconds``."""
        try:
            async with asyncio.timeout(seconds):
                await self.boot_wanted.wait()
        except TimeoutError:
            pass

    async def _heartbeats(self) -> None:
        """Heartbeat (part 2, G02) every HeartbeatInterval; a change applies at once."""
        while True:
            interval = self.device_model.integer("OCPPCommCtrlr", "HeartbeatInterval")
            if await self.wait_changed(interval if interval > 0 else None):
                continue
            await self.call(call.Heartbeat())

    async def _auto_sessions(self, connector: Connector) -> None:
        timing = self.options.sessions
        while True:
            await asyncio.sleep(self.rng.uniform(*timing.idle_s))
            if connector.can_start():
                tag = f"SIM{self.rng.randrange(16**6):06X}"
                await transactions.run_transaction(self, connector, tag, authorize=True)
