"""Charging sessions of an OCPP 2.0.1 station: TransactionEvent (part 2, E01-E07, J02).

The transaction runs from plug-in to unplug (TxStartPoint and TxStopPoint EVConnected, as
the device model says): Started when the cable is plugged in (``triggerReason``
CablePluggedIn, ``chargingState`` EVConnected; RemoteStart with the ``remoteStartId`` of a
RequestStartTransaction), Updated when the driver is authorized, when energy starts to
flow (ChargingStateChanged, Charging), every ``SampledDataCtrlr/TxUpdatedInterval`` with
meter values (MeterValuePeriodic), and when the car is full or the session was stopped;
Ended when the cable is pulled (EVCommunicationLost, ``stoppedReason`` EVDisconnected) or
at once for a stop the station decides (RemoteStop, AbnormalCondition for a fault...).
Every event of a transaction carries the next ``seqNo``, 0 first.

The car draws what the charging profiles offer its EVSE (:meth:`Charger.offer`, the 1.6
composite logic): a profile that changes the offer wakes the session, which sends an
Updated event (ChargingRateChanged) with meter values showing the new draw at once; a
TxProfile ends with its transaction (K01.FR.05 as 1.6 section 3.13.3).

Timing is the 1.6 simulator's (``SessionTiming``) and the connector state is shared
(:mod:`simulator.connectors`); the end of a stopped session, Finishing until the cable is
gone, is the 1.6 one (:func:`simulator.sessions.finish`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from ocpp.v16.enums import ChargePointStatus, Reason
from ocpp.v201 import call

from simulator import sessions
from simulator.connectors import Connector
from simulator.meters import utc_now
from simulator.stationstates import CONNECTOR_ID, Station, meter_value

__all__ = ["STOPS", "end_transaction", "run_transaction", "trigger_event"]

# Why a session stops (the shared connector state holds a 1.6 Reason) -> the Ended event's
# triggerReason and stoppedReason (part 2, 3.78 and 3.70).
STOPS: dict[str, tuple[str, str]] = {
    Reason.local: ("StopAuthorized", "Local"),
    Reason.remote: ("RemoteStop", "Remote"),
    Reason.ev_disconnected: ("EVCommunicationLost", "EVDisconnected"),
    Reason.emergency_stop: ("AbnormalCondition", "EmergencyStop"),
    Reason.de_authorized: ("Deauthorized", "DeAuthorized"),
    Reason.soft_reset: ("ResetCommand", "ImmediateReset"),
    Reason.hard_reset: ("ResetCommand", "ImmediateReset"),
    Reason.reboot: ("AbnormalCondition", "Reboot"),
    Reason.power_loss: ("AbnormalCondition", "PowerLoss"),
    Reason.unlock_command: ("UnlockCommand", "Remote"),
    Reason.other: ("AbnormalCondition", "Other"),
}


def id_token(tag: str) -> dict[str, str]:
    return {"idToken": tag, "type": "ISO14443"}


async def run_transaction(
    station: Station,
    connector: Connector,
    tag: str,
    *,
    authorize: bool,
    remote_start_id: int | None = None,
) -> None:
    """One session from plug-in to unplug; the caller has checked ``can_start()`` (or
    claimed the connector for a RequestStartTransaction)."""
    timing = station.options.sessions
    stop = connector.stop = asyncio.Event()
    connector.stop_reason = Reason.local
    connector.phase = ChargePointStatus.preparing
    connector.meter.plug_in(station.rng)
    connector.transaction_id = station.rng.randrange(1, 1 << 31)
    connector.started_at = time.time()  # the origin of a Relative profile
    connector.id_tag = tag if remote_start_id is not None else None
    station.sessions_started += 1
    unplugged = False
    try:
        await station.send_status(connector)
        await _event(
            station,
            connector,
            "Started",
            "RemoteStart" if remote_start_id is not None else "CablePluggedIn",
            "EVConnected",
            measurands="TxStartedMeasurands",
            context="Transaction.Begin",
            remote_start_id=remote_start_id,
            token=connector.id_tag,
        )
        await _wait(stop, timing.plug_delay_s)
        if not stop.is_set() and await _authorized(station, connector, tag, authorize=authorize):
            unplugged = await _charge(station, connector, stop)
    finally:
        connector.stop = None
    await end_transaction(station, connector, connector.stop_reason)
    if unplugged:
        connector.phase = ChargePointStatus.available
        if connector.inoperative_scheduled:
            connector.inoperative_scheduled = False
            connector.operative = False
        await station.send_status(connector)
    else:
        connector.phase = ChargePointStatus.finishing
        await sessions.finish(station, connector)


async def _authorized(station: Station, connector: Connector, tag: str, *, authorize: bool) -> bool:
    """Authorize (part 2, C01) unless told not to, then the Updated event with the idToken."""
    if authorize:
        answer = await station.call(call.Authorize(id_token=id_token(tag)))
        status = answer.id_token_info["status"]
        if status != "Accepted":
            station.log.info("%s: idToken %s not accepted (%s)", station.id, tag, status)
            connector.stop_reason = Reason.de_authorized
            return False
    if connector.id_tag is None:
        connector.id_tag = tag
        await _event(station, connector, "Updated", "Authorized", "EVConnected", token=tag)
    return True


async def _charge(station: Station, connector: Connector, stop: asyncio.Event) -> bool:
    """Energy flows until the planned duration, then the car waits to be unplugged.
    True when the driver unplugged (the transaction ends with EVCommunicationLost)."""
    meter = connector.meter
    timing = station.options.sessions
    connector.phase = ChargePointStatus.charging
    await station.send_status(connector)
    await _event(station, connector, "Updated", "ChargingStateChanged", "Charging")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + station.rng.uniform(*timing.duration_s)
    last = loop.time()
    # The car starts drawing under the limits that bind it (none yet: the next step).
    meter.advance(0.0, station.rng, charging=True, offered=station.offer(connector))
    while not stop.is_set():
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        interval = station.device_model.integer("SampledDataCtrlr", "TxUpdatedInterval")
        connector.limit_changed.clear()
        await sessions.wait(
            stop, min(interval, remaining) if interval > 0 else remaining, connector.limit_changed
        )
        now = loop.time()
        offered = station.offer(connector)
        meter.advance((now - last) * timing.time_scale, station.rng, True, offered)
        last = now
        if not stop.is_set() and not connector.meter_failed:
            # A new limit is shown at once (the CSMS watches its effect); the trigger
            # ChargingRateChanged says why this event came before its interval.
            rate_changed = connector.limit_changed.is_set()
            await _event(
                station,
                connector,
                "Updated",
                "ChargingRateChanged" if rate_changed else "MeterValuePeriodic",
                "Charging",
                measurands="TxUpdatedMeasurands",
                context="Other" if rate_changed else "Sample.Periodic",
            )
    meter.power_w = 0.0
    if stop.is_set():
        return False
    # The car is done: it stays connected until the driver comes back.
    connector.phase = ChargePointStatus.suspended_ev
    await _event(station, connector, "Updated", "ChargingStateChanged", "SuspendedEV")
    await _wait(stop, timing.unplug_delay_s)
    if stop.is_set() or connector.stuck:
        return False
    connector.stop_reason = Reason.ev_disconnected
    return True


async def end_transaction(
    station: Station, connector: Connector, reason: Reason, *, offline: bool = False
) -> None:
    """TransactionEvent Ended for the connector's transaction, if it has one."""
    if connector.transaction_id is None:
        return
    trigger, stopped = STOPS.get(reason, STOPS[Reason.other])
    state = "Idle" if reason == Reason.ev_disconnected else "EVConnected"
    await _event(
        station,
        connector,
        "Ended",
        trigger,
        state,
        measurands="TxEndedMeasurands",
        context="Transaction.End",
        stopped_reason=stopped,
        offline=offline,
    )
    station.log.info(
        "%s: transaction %s on EVSE %s ended (%s)",
        station.id,
        station.transaction_id(connector),
        connector.id,
        stopped,
    )
    station.forget_transaction(connector)
    connector.transaction_id = None
    connector.started_at = None
    station.profiles.transaction_ended(connector.id)
    connector.id_tag = None
    station.sessions_completed += 1


async def trigger_event(station: Station, connector: Connector) -> None:
    """TransactionEvent Updated (triggerReason Trigger) for a TriggerMessage, with a meter
    reading, when the EVSE has a transaction (F06.FR.07)."""
    if connector.transaction_id is None:
        return
    charging = connector.phase == ChargePointStatus.charging
    await _event(
        station,
        connector,
        "Updated",
        "Trigger",
        "Charging" if charging else "EVConnected",
        measurands="TxUpdatedMeasurands",
        context="Trigger",
    )


async def _event(
    station: Station,
    connector: Connector,
    event_type: str,
    trigger: str,
    charging_state: str,
    *,
    measurands: str | None = None,
    context: str = "Sample.Periodic",
    remote_start_id: int | None = None,
    token: str | None = None,
    stopped_reason: str | None = None,
    offline: bool = False,
) -> Any:
    info: dict[str, Any] = {
        "transactionId": station.transaction_id(connector),
        "chargingState": charging_state,
    }
    if remote_start_id is not None:
        info["remoteStartId"] = remote_start_id
    if stopped_reason is not None:
        info["stoppedReason"] = stopped_reason
    values = None
    if measurands is not None and not connector.meter_failed:
        wanted = station.measurands(measurands)
        if wanted:
            values = [meter_value(connector, wanted, context)]
    return await station.call(
        call.TransactionEvent(
            event_type=event_type,
            timestamp=utc_now(),
            trigger_reason=trigger,
            seq_no=station.next_seq_no(connector),
            transaction_info=info,
            offline=True if offline else None,
            evse={"id": connector.id, "connectorId": CONNECTOR_ID},
            id_token=id_token(token) if token is not None else None,
            meter_value=values,
        )
    )


async def _wait(event: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds`` or until ``event`` is set, whichever comes first."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
