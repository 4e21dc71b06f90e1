"""Faults a simulated charger can suffer, injected at random, on a schedule, or by hand.

Each maps to what a real charger reports (OCPP 1.6 section 4.9 and the ChargePointErrorCode
list of section 7.6): overheating is Faulted with HighTemperature and a hot Temperature
meter value; a ground fault is Faulted with GroundFailure; a stuck connector keeps its
status (Preparing or Finishing) with ConnectorLockFailure and refuses UnlockConnector; a
broken power meter reports PowerMeterFailure and sends no more MeterValues; going offline
closes the socket and stays away. Faulted connectors end their transaction with
EmergencyStop (section 7.38, Reason). Faults at set times across a fleet
(``SimulatorOptions.fault_schedule``) are the fleet's to run (:mod:`simulator.fleets`);
``FirmwareFailure``, the firmware update's fault switch, lives on the charger's state
(:mod:`simulator.states`) and is offered here too.
"""

from __future__ import annotations

import asyncio
from enum import StrEnum

from ocpp.v16.enums import ChargePointErrorCode, ChargePointStatus, ReadingContext, Reason

from simulator import sessions
from simulator.connectors import Connector
from simulator.states import Charger, FirmwareFailure

__all__ = ["FaultKind", "FirmwareFailure", "clear", "inject", "random_faults"]


class FaultKind(StrEnum):
    OVERHEATING = "overheating"
    GROUND_FAILURE = "ground_failure"
    STUCK_CONNECTOR = "stuck_connector"
    OFFLINE = "offline"
    POWER_METER_FAILURE = "power_meter_failure"


RANDOM_KINDS = tuple(FaultKind)
ERROR_CODES = {
    FaultKind.OVERHEATING: ChargePointErrorCode.high_temperature,
    FaultKind.GROUND_FAILURE: ChargePointErrorCode.ground_failure,
}


def inject(charger: Charger, kind: FaultKind, connector_id: int, duration_s: float | None) -> None:
    """Start ``kind`` on a connector now; clear it after ``duration_s`` when given."""
    charger.log.info("%s: fault %s on connector %s", charger.id, kind, connector_id)
    if kind is FaultKind.OFFLINE:
        charger.go_offline(duration_s if duration_s is not None else 60.0)
        return
    connector = charger.connector(connector_id)
    if kind in ERROR_CODES:
        connector.fault = ERROR_CODES[kind]
        connector.meter.overheating = kind is FaultKind.OVERHEATING
        charger.spawn(_announce_fault(charger, connector))
    elif kind is FaultKind.STUCK_CONNECTOR:
        connector.stuck = True
        if not connector.busy:
            # The cable cannot be released: the connector stays occupied (Preparing).
            connector.phase = ChargePointStatus.preparing
        charger.spawn(charger.send_status(connector))
    elif kind is FaultKind.POWER_METER_FAILURE:
        connector.meter_failed = True
        charger.spawn(charger.send_status(connector))
    if duration_s is not None:
        charger.spawn(
            _clear_later(charger, kind, connector_id, duration_s), outlive_connection=True
        )


def clear(charger: Charger, kind: FaultKind, connector_id: int) -> None:
    """End ``kind`` on a connector and report the connector's state again."""
    if kind is FaultKind.OFFLINE:
        return  # the charger comes back by itself when its time away is over
    connector = charger.connector(connector_id)
    if kind in ERROR_CODES and connector.fault is ERROR_CODES[kind]:
        connector.fault = None
        connector.meter.overheating = False
    elif kind is FaultKind.STUCK_CONNECTOR and connector.stuck:
        connector.stuck = False
        if connector.stop is None and connector.transaction_id is None:
            charger.spawn(sessions.finish(charger, connector))
            return
    elif kind is FaultKind.POWER_METER_FAILURE:
        connector.meter_failed = False
    else:
        return
    charger.log.info("%s: fault %s cleared on connector %s", charger.id, kind, connector_id)
    charger.spawn(charger.send_status(connector))


async def _announce_fault(charger: Charger, connector: Connector) -> None:
    """Report a fault that takes the connector out of service, then end its session."""
    if connector.meter.overheating:
        connector.meter.temperature_c = connector.meter.temperature_c + 60.0
        connector.meter.advance(1.0, charger.rng, charging=connector.transaction_id is not None)
        await charger.send_meter_sample(connector, ReadingContext.trigger)
    await charger.send_status(connector)
    connector.request_stop(Reason.emergency_stop)


async def _clear_later(
    charger: Charger, kind: FaultKind, connector_id: int, seconds: float
) -> None:
    await asyncio.sleep(seconds)
    clear(charger, kind, connector_id)


async def random_faults(charger: Charger) -> None:
    """Faults as a Poisson process of ``fault_rate_per_hour`` per charger."""
    opts = charger.options
    rate_per_s = opts.fault_rate_per_hour / 3600.0
    while True:
        await asyncio.sleep(charger.rng.expovariate(rate_per_s))
        kind = charger.rng.choice(RANDOM_KINDS)
        connector_id = charger.rng.randint(1, len(charger.connectors) - 1)
        inject(charger, kind, connector_id, charger.rng.uniform(*opts.fault_duration_s))
