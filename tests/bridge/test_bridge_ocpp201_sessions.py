"""OCPP 2.0.1 plug-in and plug-out times: TransactionEvent trigger reasons into the session
records (EV-ChART plug_start / plug_end), through a real station on real websockets."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import test_bridge_ocpp201
from conftest import MqttWatcher
from ocpp.v201 import call
from test_bridge_ocpp201 import OpenStation, energy

from bridge import Bridge
from fleet.sessions import find_sessions

open_station = test_bridge_ocpp201.open_station  # the fixture: library stations, accepted


def at(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat().replace("+00:00", "Z")


async def test_plug_times_come_from_the_trigger_reasons(
    bridge: Bridge,
    open_station: OpenStation,
    watcher: MqttWatcher,
) -> None:
    station = await open_station()
    tx = f"tx-{uuid.uuid4().hex[:8]}"
    t0 = round(datetime.now(UTC).timestamp()) - 600.0
    # (seqNo, eventType, triggerReason, seconds after t0): the session starts at the
    # cable check (EVSE-side, no token yet), the cable goes in a minute later, the driver's
    # token comes after, the EV is detected later still (not the plug-in), communication is
    # lost at unplugging, the EV departs after that.
    events = [
        (0, "Started", "ChargingStateChanged", 0),
        (1, "Updated", "CablePluggedIn", 60),
        (2, "Updated", "Authorized", 65),
        (3, "Updated", "EVDetected", 70),
        (4, "Updated", "ChargingStateChanged", 80),
        (5, "Updated", "EVCommunicationLost", 400),
        (6, "Ended", "EVDeparted", 420),
    ]
    for seq_no, kind, trigger, after in events:
        await station.call(
            call.TransactionEvent(
                event_type=kind,
                timestamp=at(t0 + after),
                trigger_reason=trigger,
                seq_no=seq_no,
                transaction_info={"transaction_id": tx},
                evse={"id": 1, "connector_id": 1},
                meter_value=[energy(1000.0 + 10 * seq_no)],
                **({"id_token": {"id_token": "TAG-9", "type": "ISO14443"}} if seq_no == 2 else {}),
            )
        )
    stopped = await watcher.wait_for(
        bridge.topics.events(station.id, "transaction"), lambda m: m["event"] == "stopped"
    )
    assert bridge.services is not None and bridge.db is not None
    session = await bridge.services.transactions.get(stopped["sessionId"])
    assert session is not None
    assert (session["plugStart"], session["plugEnd"]) == (t0 + 60, t0 + 400)
    assert (session["startedAt"], session["stoppedAt"]) == (t0, t0 + 420)

    [record], _ = await find_sessions(bridge.db, charger_ids=[station.id])
    row = record.record()
    assert row["plug_start_datetime"] == at(t0 + 60)
    assert row["plug_end_datetime"] == at(t0 + 400)
    assert row["charge_start_datetime"] == at(t0)
    assert row["id_tag"] == "TAG-9"  # authorized after the start: the session is the token's


async def test_a_session_without_plug_reports_leaves_the_plug_times_empty(
    bridge: Bridge,
    open_station: OpenStation,
    watcher: MqttWatcher,
) -> None:
    station = await open_station()
    tx = f"tx-{uuid.uuid4().hex[:8]}"
    for seq_no, kind, trigger in ((0, "Started", "Authorized"), (1, "Ended", "StopAuthorized")):
        await station.call(
            call.TransactionEvent(
                event_type=kind,
                timestamp=at(datetime.now(UTC).timestamp()),
                trigger_reason=trigger,
                seq_no=seq_no,
                transaction_info={"transaction_id": tx},
                evse={"id": 1, "connector_id": 1},
            )
        )
    stopped = await watcher.wait_for(
        bridge.topics.events(station.id, "transaction"), lambda m: m["event"] == "stopped"
    )
    assert bridge.services is not None
    session = await bridge.services.transactions.get(stopped["sessionId"])
    assert session is not None
    assert (session["plugStart"], session["plugEnd"]) == (None, None)
