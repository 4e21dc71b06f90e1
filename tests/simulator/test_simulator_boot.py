"""Boot, status and heartbeat against an independent central system (OCPP 1.6 4.2, 4.6, 4.9)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from simulator_helpers import CentralSystem, fast_options, running

from simulator import ChargerState, Fleet


async def test_boot_reports_identity_statuses_and_heartbeats(central: CentralSystem) -> None:
    central.heartbeat_interval = 1
    async with running(fast_options(central.url)) as fleet:
        charger = fleet.chargers[0]
        cid = charger.id
        assert cid == "SIM-00001"
        await central.wait(lambda: len(central.messages(cid, "Heartbeat")) >= 1, timeout=4)
        boot = central.messages(cid, "BootNotification")[0]
        assert boot["chargePointVendor"] == charger.model.vendor
        assert boot["chargePointModel"] == charger.model.model
        assert boot["firmwareVersion"] == charger.model.firmware_version
        assert boot["chargePointSerialNumber"].startswith(charger.model.model)
        statuses = central.messages(cid, "StatusNotification")
        assert [s["connectorId"] for s in statuses] == list(range(charger.model.connectors + 1))
        assert {s["status"] for s in statuses} == {"Available"}
        assert {s["errorCode"] for s in statuses} == {"NoError"}
        # The interval the central system returned became the charger's HeartbeatInterval.
        assert charger.config.get("HeartbeatInterval") == "1"
        assert charger.state is ChargerState.BOOTED
        assert fleet.counts.booted == 1
        assert central.actions(cid)[:1] == ["BootNotification"]


async def test_pending_then_accepted_boot_is_retried(central: CentralSystem) -> None:
    central.boot_statuses["SIM-00001"] = ["Pending", "Rejected"]
    async with running(fast_options(central.url)) as fleet:
        await fleet.wait_for(booted=1, timeout=5)
        boots = central.messages("SIM-00001", "BootNotification")
        assert len(boots) == 3
        # Nothing but BootNotification before the boot was accepted (section 4.2).
        assert central.actions("SIM-00001")[:3] == ["BootNotification"] * 3


async def test_fleet_mixes_vendor_models_and_ids() -> None:
    fleet = Fleet(fast_options("ws://127.0.0.1:9/ocpp", chargers=40, id_prefix="T-"))
    models = {(c.model.vendor, c.model.model) for c in fleet.chargers}
    assert len(models) >= 3
    assert fleet.chargers[0].id == "T-00001"
    assert fleet.chargers[-1].id == "T-00040"
    assert all(1 <= len(c.connectors) - 1 <= 2 for c in fleet.chargers)
    again = Fleet(fast_options("ws://127.0.0.1:9/ocpp", chargers=40, id_prefix="T-"))
    assert [c.serial_number for c in again.chargers] == [c.serial_number for c in fleet.chargers]


async def test_wrong_password_is_logged_clearly_and_retried_slowly(
    central: CentralSystem, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="simulator")
    options = fast_options(central.url, password="wrong", unauthorized_retry_s=0.4)
    async with running(options) as fleet:
        await central.wait(lambda: central.refused >= 2, timeout=3)
        await asyncio.sleep(0.1)
        refused = central.refused
        assert refused <= 3  # 0.4 s apart, not a tight loop
        assert fleet.chargers[0].errors >= 2
    messages = [r.getMessage() for r in caplog.records if "401" in r.getMessage()]
    assert messages
    assert "SIM-00001" in messages[0] and "password" in messages[0]
    assert not central.connections
