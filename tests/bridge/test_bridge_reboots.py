"""A BootNotification is a new start: connector state from before it is not trusted."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from conftest import OpenCharger, RawCharger, RunningTwin, eventually

from bridge import Bridge
from bridge.times import iso_time
from twin.documents import ShadowDocument


async def answer_calls(charger: RawCharger, seen: list[list[Any]], statuses: bool) -> None:
    """Play a charger that answers what the bridge asks; a triggered StatusNotification is
    sent only when ``statuses`` (a factory-reset charger that reports nothing unasked)."""
    while True:
        call = await charger.calls.get()
        seen.append(call)
        action = call[2]
        if action == "GetConfiguration":
            await charger.reply(call, {"configurationKey": []})
        elif action == "TriggerMessage":
            await charger.reply(call, {"status": "Accepted" if statuses else "Rejected"})
            if statuses:
                for connector in (0, 1):
                    payload = {
                        "connectorId": connector,
                        "errorCode": "NoError",
                        "status": "Available",
                        "timestamp": iso_time(),
                    }
                    frame = [2, f"status-{connector}", "StatusNotification", payload]
                    await charger.ws.send(json.dumps(frame))
        else:
            await charger.reply(call, {"status": "Accepted"})


async def seed_inoperative(twin: RunningTwin, charger_id: str) -> None:
    """What an earlier life of the charger left: desired and reported Inoperative."""
    at = time.time() - 3600
    earlier = ShadowDocument(charger_id)
    earlier.apply({"desired": {"availability": {"0": "Inoperative"}}}, at)
    earlier.apply(
        {
            "reported": {
                "chargePoint": {"vendor": "V", "model": "M"},
                "availability": {"0": "Inoperative"},
                "connectors": {"0": {"status": "Unavailable", "errorCode": "NoError"}},
            }
        },
        at + 1,
    )
    earlier.version = 1
    await twin.store.save_many([(earlier, 0)])


async def test_availability_is_reconciled_again_after_a_factory_reset(
    bridge: Bridge, open_charger: OpenCharger, twin: RunningTwin
) -> None:
    charger_id = "cp-factory-reset"
    await seed_inoperative(twin, charger_id)
    charger = await open_charger(charger_id)
    seen: list[list[Any]] = []
    player = asyncio.get_running_loop().create_task(answer_calls(charger, seen, statuses=False))
    try:
        await charger.result(
            "BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"}
        )

        # The old Inoperative is forgotten: the delta holds it again and it is sent again.
        def changes() -> list[Any]:
            return [c[2:] for c in seen if c[2] == "ChangeAvailability"]

        await eventually(changes, what="a ChangeAvailability")
        assert changes() == [["ChangeAvailability", {"connectorId": 0, "type": "Inoperative"}]]
        await twin.wait_reported(
            charger_id, lambda r: r.get("availability") == {"0": "Inoperative"}
        )
        assert ["TriggerMessage", {"requestedMessage": "StatusNotification"}] in [
            c[2:] for c in seen
        ]
    finally:
        player.cancel()


async def test_triggered_statuses_replace_the_old_connectors(
    bridge: Bridge, open_charger: OpenCharger, twin: RunningTwin
) -> None:
    charger_id = "cp-rebooted"
    await seed_inoperative(twin, charger_id)
    charger = await open_charger(charger_id)
    seen: list[list[Any]] = []
    player = asyncio.get_running_loop().create_task(answer_calls(charger, seen, statuses=True))
    try:
        await charger.result(
            "BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"}
        )
        reported = await twin.wait_reported(
            charger_id,
            lambda r: (
                {k: v.get("status") for k, v in (r.get("connectors") or {}).items()}
                == {"0": "Available", "1": "Available"}
                and r.get("availability") == {"0": "Inoperative", "1": "Operative"}
            ),
        )
        assert reported["connectors"]["0"]["errorCode"] == "NoError"
    finally:
        player.cancel()


async def test_the_configuration_read_after_a_boot_replaces_the_old_one(
    bridge: Bridge, open_charger: OpenCharger, twin: RunningTwin
) -> None:
    charger_id = "cp-new-config"
    earlier = ShadowDocument(charger_id)
    earlier.apply(
        {
            "reported": {
                "chargePoint": {"vendor": "V", "model": "M"},
                "config": {"HeartbeatInterval": "300", "VendorGone": "1"},
            }
        },
        time.time() - 60,
    )
    earlier.version = 1
    await twin.store.save_many([(earlier, 0)])
    charger = await open_charger(charger_id)
    await charger.result("BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"})
    get_configuration = await charger.next_call()
    await charger.reply(
        get_configuration,
        {"configurationKey": [{"key": "HeartbeatInterval", "readonly": False, "value": "60"}]},
    )
    reported = await twin.wait_reported(
        charger_id, lambda r: r.get("config") == {"HeartbeatInterval": "60"}
    )
    assert "VendorGone" not in reported["config"]


async def test_an_unchanged_configuration_is_not_written_again_at_a_boot(
    bridge: Bridge, open_charger: OpenCharger, twin: RunningTwin
) -> None:
    charger_id = "cp-same-config"
    config = {"HeartbeatInterval": "300", "MeterValueSampleInterval": "60"}
    earlier = ShadowDocument(charger_id)
    earlier.apply({"reported": {"chargePoint": {"vendor": "V", "model": "M"}}}, time.time() - 60)
    earlier.apply({"reported": {"config": config}}, time.time() - 60)
    earlier.version = 1
    await twin.store.save_many([(earlier, 0)])
    stamps = (await twin.document(charger_id))["metadata"]["reported"]["config"]
    charger = await open_charger(charger_id)
    boot = {"chargePointVendor": "V", "chargePointModel": "M", "firmwareVersion": "2.0"}
    await charger.result("BootNotification", boot)
    get_configuration = await charger.next_call()
    keys = [{"key": k, "readonly": False, "value": v} for k, v in config.items()]
    await charger.reply(get_configuration, {"configurationKey": keys})
    # The boot is mirrored (its firmware version) and the configuration not touched: the same
    # values, still stamped with when they were first reported.
    await twin.wait_reported(charger_id, lambda r: r.get("firmware") == {"version": "2.0"})
    await asyncio.sleep(0.5)
    document = await twin.document(charger_id)
    assert document["state"]["reported"]["config"] == config
    assert document["metadata"]["reported"]["config"] == stamps


async def boot_with_connectors(charger: RawCharger, reported: list[int]) -> None:
    """Boot a two-connector charger that reports the ``reported`` connectors on its own."""
    await charger.result("BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"})
    for connector in reported:
        status = {"connectorId": connector, "errorCode": "NoError", "status": "Available"}
        await charger.result("StatusNotification", status)
    get_configuration = await charger.next_call()
    assert get_configuration[2] == "GetConfiguration"
    count = {"key": "NumberOfConnectors", "readonly": True, "value": "2"}
    await charger.reply(get_configuration, {"configurationKey": [count]})


async def test_a_charger_that_reports_every_connector_after_its_boot_is_not_asked(
    bridge: Bridge, open_charger: OpenCharger
) -> None:
    charger = await open_charger("cp-reports-all")
    await boot_with_connectors(charger, [0, 1, 2])

    with pytest.raises(TimeoutError):
        call = await charger.next_call(timeout=bridge.options.status_grace + 1.0)
        pytest.fail(f"asked for {call[2:]} although every connector reported")


async def test_only_the_connectors_a_charger_did_not_report_are_asked_for(
    bridge: Bridge, open_charger: OpenCharger
) -> None:
    charger = await open_charger("cp-reports-some")
    await boot_with_connectors(charger, [0, 2])

    trigger = await charger.next_call(timeout=bridge.options.status_grace + 5.0)
    assert trigger[2:] == [
        "TriggerMessage",
        {"requestedMessage": "StatusNotification", "connectorId": 1},
    ]
    await charger.reply(trigger, {"status": "Accepted"})
    with pytest.raises(TimeoutError):
        await charger.next_call(timeout=1.0)


async def test_a_charger_that_reports_nothing_after_its_boot_is_asked_for_every_connector(
    bridge: Bridge, open_charger: OpenCharger
) -> None:
    charger = await open_charger("cp-reports-none")
    await boot_with_connectors(charger, [])

    trigger = await charger.next_call(timeout=bridge.options.status_grace + 5.0)
    assert trigger[2:] == ["TriggerMessage", {"requestedMessage": "StatusNotification"}]
