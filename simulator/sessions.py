"""Charging sessions on a charger's connectors, and the messages they send.

A session walks the states of OCPP 1.6 section 4.9 (StatusNotification) in the order of
the transaction flow of sections 4.1, 4.8 and 4.10: Preparing, Authorize, StartTransaction,
Charging with MeterValues (section 4.7) every MeterValueSampleInterval, StopTransaction
with its transactionData, Finishing, then Available once the cable is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from ocpp.v16 import call
from ocpp.v16.enums import AuthorizationStatus, ChargePointStatus, ReadingContext, Reason

from simulator.connectors import Connector
from simulator.meters import utc_now
from simulator.states import Charger

__all__ = ["finish", "run_session", "send_meter_values", "stop_transaction", "wait"]


async def run_session(
    charger: Charger, connector: Connector, id_tag: str, *, authorize: bool
) -> None:
    """One session from plug-in to unplug; the caller has checked ``can_start()``."""
    timing = charger.options.sessions
    stop = connector.stop = asyncio.Event()
    connector.stop_reason = Reason.local
    connector.phase = ChargePointStatus.preparing
    await charger.send_status(connector)
    charged = False
    try:
        await wait(stop, timing.plug_delay_s)
        if authorize and not stop.is_set():
            answer = await charger.call(call.Authorize(id_tag=id_tag))
            if answer.id_tag_info["status"] != AuthorizationStatus.accepted:
                charger.log.info("%s: idTag %s not accepted", charger.id, id_tag)
                stop.set()
        if not stop.is_set():
            charged = True
            await _charge(charger, connector, id_tag, stop)
    finally:
        connector.stop = None
    if charged:
        connector.phase = ChargePointStatus.finishing
        await charger.send_status(connector)
    # Without a transaction the driver just unplugs: Preparing goes back to Available.
    await finish(charger, connector)


async def finish(charger: Charger, connector: Connector) -> None:
    """Unplug after Finishing, unless the connector is stuck (it stays in Finishing)."""
    if connector.stuck:
        return
    await asyncio.sleep(charger.options.sessions.unplug_delay_s)
    if connector.stuck:
        return
    connector.phase = ChargePointStatus.available
    if connector.inoperative_scheduled:
        # Section 5.2: a change that was Scheduled takes effect when the transaction ends.
        connector.inoperative_scheduled = False
        connector.operative = False
    await charger.send_status(connector)


async def _charge(charger: Charger, connector: Connector, id_tag: str, stop: asyncio.Event) -> None:
    meter = connector.meter
    evs = charger.options.evs
    single = evs.single_phase_share > 0 and charger.rng.random() < evs.single_phase_share
    meter.plug_in(
        charger.rng,
        ev_phases=1 if single else None,
        ev_max_a=charger.rng.uniform(*evs.max_current_a) if evs.max_current_a else None,
    )
    started = await charger.call(
        call.StartTransaction(
            connector_id=connector.id,
            id_tag=id_tag,
            meter_start=meter.register_wh,
            timestamp=utc_now(),
        )
    )
    connector.transaction_id = int(started.transaction_id)
    connector.started_at = time.time()
    connector.transaction_known.set()
    connector.id_tag = id_tag
    charger.sessions_started += 1
    connector.begin_sample = meter.sample(
        charger.config.items("StopTxnSampledData"), ReadingContext.transaction_begin
    )
    if started.id_tag_info["status"] != AuthorizationStatus.accepted:
        # Section 4.8: with StopTransactionOnInvalidId the charger stops at once.
        await stop_transaction(charger, connector, Reason.de_authorized)
        return
    connector.phase = ChargePointStatus.charging
    await charger.send_status(connector)
    loop = asyncio.get_running_loop()
    timing = charger.options.sessions
    deadline = loop.time() + charger.rng.uniform(*timing.duration_s)
    last = loop.time()
    # The car starts drawing under the limits that bind it (none yet: the next step).
    meter.advance(0.0, charger.rng, charging=True, offered=charger.offer(connector))
    while not stop.is_set():
        remaining = deadline - loop.time()
        if remaining <= 0:
            connector.stop_reason = Reason.ev_disconnected
            break
        interval = charger.config.integer("MeterValueSampleInterval")
        connector.limit_changed.clear()
        await wait(
            stop,
            min(interval, remaining) if interval > 0 else remaining,
            connector.limit_changed,
        )
        now = loop.time()
        offered = charger.offer(connector)
        meter.advance((now - last) * timing.time_scale, charger.rng, True, offered)
        last = now
        if not stop.is_set():
            # A new limit is shown at once (the central system watches its effect).
            context = (
                ReadingContext.other
                if connector.limit_changed.is_set()
                else ReadingContext.sample_periodic
            )
            await send_meter_values(charger, connector, context)
    await stop_transaction(charger, connector, connector.stop_reason)


async def send_meter_values(
    charger: Charger, connector: Connector, context: ReadingContext
) -> None:
    """MeterValues.req (section 4.7); a failed power meter (PowerMeterFailure) sends none."""
    if connector.meter_failed:
        return
    sample = connector.meter.sample(charger.config.items("MeterValuesSampledData"), context)
    await charger.call(
        call.MeterValues(
            connector_id=connector.id,
            meter_value=[sample],
            transaction_id=connector.transaction_id,
        )
    )


async def stop_transaction(charger: Charger, connector: Connector, reason: Reason) -> None:
    """StopTransaction.req (section 4.10) with the begin and end samples as transactionData."""
    transaction_id = connector.transaction_id
    if transaction_id is None:
        return
    end = connector.meter.sample(
        charger.config.items("StopTxnSampledData"), ReadingContext.transaction_end
    )
    data = [s for s in (connector.begin_sample, end) if s is not None]
    connector.meter.power_w = 0.0
    await charger.call(
        call.StopTransaction(
            meter_stop=connector.meter.register_wh,
            timestamp=utc_now(),
            transaction_id=transaction_id,
            reason=reason,
            id_tag=connector.id_tag,
            transaction_data=data,
        )
    )
    connector.transaction_id = None
    connector.started_at = None
    connector.transaction_known.clear()
    charger.profiles.transaction_ended(connector.id)
    connector.id_tag = None
    connector.begin_sample = None
    charger.sessions_completed += 1
    charger.log.info(
        "%s: transaction %s on connector %s stopped (%s)",
        charger.id,
        transaction_id,
        connector.id,
        reason,
    )


async def wait(event: asyncio.Event, seconds: float, also: asyncio.Event | None = None) -> None:
    """Sleep ``seconds`` or until ``event`` (or ``also``) is set, whichever comes first."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            if also is None:
                await event.wait()
                return
            waits = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(also.wait())]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiting in waits:
                    waiting.cancel()
