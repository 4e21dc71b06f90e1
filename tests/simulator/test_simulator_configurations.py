"""GetConfiguration / ChangeConfiguration (OCPP 1.6 sections 5.3, 5.8, 9.1) and other
central-system commands, over a real socket."""

from __future__ import annotations

import time

from ocpp.v16 import call
from simulator_helpers import CentralSystem, fast_options, running

from simulator.configurations import (
    ConfigurationStore,
    authorization_key_password,
    default_values,
)


def test_store_answers_like_a_charger() -> None:
    store = ConfigurationStore(default_values(2, 300, 10))
    assert store.change("NumberOfConnectors", "3") == "Rejected"
    assert store.change("WebSocketPingInterval", "30") == "RebootRequired"
    assert store.get("WebSocketPingInterval") == "30"
    assert store.change("NoSuchKey", "1") == "NotSupported"
    assert store.change("HeartbeatInterval", "ten") == "Rejected"
    assert store.change("HeartbeatInterval", "-5") == "Rejected"
    assert store.change("LocalPreAuthorize", "maybe") == "Rejected"
    assert store.change("MeterValuesSampledData", "Voltage,Bogus") == "Rejected"
    assert store.change("MeterValuesSampledData", "Voltage, SoC") == "Accepted"
    assert store.items("MeterValuesSampledData") == ["Voltage", "SoC"]
    assert store.change("LocalPreAuthorize", "TRUE") == "Accepted"
    assert store.boolean("LocalPreAuthorize") is True
    known, unknown = store.read(["HeartbeatInterval", "Nope", "NumberOfConnectors"])
    assert known == [
        {"key": "HeartbeatInterval", "readonly": False, "value": "300"},
        {"key": "NumberOfConnectors", "readonly": True, "value": "2"},
    ]
    assert unknown == ["Nope"]


async def test_get_and_change_configuration_over_ocpp(central: CentralSystem) -> None:
    async with running(fast_options(central.url)) as fleet:
        charger = fleet.chargers[0]
        cid = charger.id
        await fleet.wait_for(booted=1, timeout=5)
        everything = await central.call(cid, call.GetConfiguration())
        keys = {entry["key"]: entry for entry in everything.configuration_key}
        for key in (
            "HeartbeatInterval",
            "MeterValueSampleInterval",
            "ConnectionTimeOut",
            "MeterValuesSampledData",
            "NumberOfConnectors",
            "AuthorizeRemoteTxRequests",
            "LocalPreAuthorize",
            "ClockAlignedDataInterval",
            "WebSocketPingInterval",
        ):
            assert key in keys
        assert keys["NumberOfConnectors"]["readonly"] is True
        assert keys["NumberOfConnectors"]["value"] == str(charger.model.connectors)
        assert not everything.unknown_key

        some = await central.call(cid, call.GetConfiguration(key=["HeartbeatInterval", "Foo"]))
        assert [e["key"] for e in some.configuration_key] == ["HeartbeatInterval"]
        assert some.unknown_key == ["Foo"]

        async def change(key: str, value: str) -> str:
            answer = await central.call(cid, call.ChangeConfiguration(key=key, value=value))
            return str(answer.status)

        assert await change("NumberOfConnectors", "4") == "Rejected"
        assert await change("WebSocketPingInterval", "15") == "RebootRequired"
        assert await change("Unknown.Vendor.Key", "1") == "NotSupported"
        assert await change("MeterValueSampleInterval", "abc") == "Rejected"
        assert await change("ConnectionTimeOut", "90") == "Accepted"
        assert charger.config.get("ConnectionTimeOut") == "90"

        # A shorter HeartbeatInterval takes effect at once, not after the old 60 s.
        before = len(central.messages(cid, "Heartbeat"))
        started = time.monotonic()
        assert await change("HeartbeatInterval", "1") == "Accepted"
        await central.wait(lambda: len(central.messages(cid, "Heartbeat")) >= before + 2, 4)
        assert time.monotonic() - started < 3.5


async def test_commands_answer_like_a_charger(central: CentralSystem) -> None:
    async with running(fast_options(central.url)) as fleet:
        charger = fleet.chargers[0]
        cid = charger.id
        await fleet.wait_for(booted=1, timeout=5)
        assert (await central.call(cid, call.ClearCache())).status == "Accepted"
        transfer = await central.call(cid, call.DataTransfer(vendor_id="com.example"))
        assert transfer.status == "UnknownVendorId"
        unlock = await central.call(cid, call.UnlockConnector(connector_id=1))
        assert unlock.status == "Unlocked"

        unavailable = await central.call(
            cid, call.ChangeAvailability(connector_id=1, type="Inoperative")
        )
        assert unavailable.status == "Accepted"
        await central.wait(
            lambda: central.messages(cid, "StatusNotification")[-1]["status"] == "Unavailable"
        )
        refused = await central.call(cid, call.RemoteStartTransaction(id_tag="X", connector_id=1))
        assert refused.status == "Rejected"
        back = await central.call(cid, call.ChangeAvailability(connector_id=1, type="Operative"))
        assert back.status == "Accepted"
        await central.wait(
            lambda: central.messages(cid, "StatusNotification")[-1]["status"] == "Available"
        )

        for message in ("Heartbeat", "MeterValues", "StatusNotification"):
            before = len(central.messages(cid, message))
            answer = await central.call(
                cid, call.TriggerMessage(requested_message=message, connector_id=1)
            )
            assert answer.status == "Accepted"
            await central.wait(lambda m=message, b=before: len(central.messages(cid, m)) > b)
        triggered = central.messages(cid, "MeterValues")[-1]["meterValue"][0]["sampledValue"]
        assert {s["context"] for s in triggered} == {"Trigger"}
        bad = await central.call(
            cid, call.TriggerMessage(requested_message="Heartbeat", connector_id=9)
        )
        assert bad.status == "Rejected"
        names = [action for action, _ in charger.received]
        assert "ChangeAvailability" in names and "TriggerMessage" in names


async def test_availability_is_scheduled_during_a_transaction(central: CentralSystem) -> None:
    async with running(fast_options(central.url)) as fleet:
        cid = fleet.chargers[0].id
        await fleet.wait_for(booted=1, timeout=5)
        await central.call(cid, call.RemoteStartTransaction(id_tag="A", connector_id=1))
        await central.wait(lambda: central.messages(cid, "StartTransaction"))
        answer = await central.call(
            cid, call.ChangeAvailability(connector_id=1, type="Inoperative")
        )
        assert answer.status == "Scheduled"
        await central.wait(
            lambda: central.messages(cid, "StatusNotification")[-1]["status"] == "Unavailable",
            timeout=6,
        )
        assert central.messages(cid, "StopTransaction")


async def test_reset_reboots_and_boots_again(central: CentralSystem) -> None:
    async with running(fast_options(central.url)) as fleet:
        charger = fleet.chargers[0]
        cid = charger.id
        await fleet.wait_for(booted=1, timeout=5)
        await central.call(cid, call.RemoteStartTransaction(id_tag="R", connector_id=1))
        await central.wait(lambda: central.messages(cid, "StartTransaction"))
        assert (await central.call(cid, call.Reset(type="Soft"))).status == "Accepted"
        await central.wait(lambda: len(central.messages(cid, "BootNotification")) == 2)
        assert central.messages(cid, "StopTransaction")[0]["reason"] == "SoftReset"
        assert central.connections[cid] == 2
        await fleet.wait_for(booted=1, timeout=5)
        assert (await central.call(cid, call.Reset(type="Hard"))).status == "Accepted"
        await central.wait(lambda: len(central.messages(cid, "BootNotification")) == 3)
        await central.wait(lambda: charger.boots == 3)


def test_an_authorization_key_is_hex_of_16_to_20_printable_bytes() -> None:
    assert authorization_key_password(b"a-new-password-0001!".hex()) == "a-new-password-0001!"
    assert authorization_key_password(b"sixteen-bytes-xx".hex()) == "sixteen-bytes-xx"
    assert authorization_key_password(b"fifteen-bytes-x".hex()) is None  # under 16 bytes
    assert authorization_key_password(b"twenty-one-bytes-xxxx".hex()) is None  # over 20
    assert authorization_key_password("z" * 32) is None  # not hex
    assert authorization_key_password(b"sixteen-bytes-xx".hex()[:-1]) is None  # odd
    assert authorization_key_password((b"\x00" * 16).hex()) is None  # not printable
    assert (
        authorization_key_password(b"user:password-xxx".hex()) is None
    )  # Basic auth splits at ":"


async def test_a_new_authorization_key_is_used_from_the_next_connection(
    central: CentralSystem,
) -> None:
    async with running(fast_options(central.url)) as fleet:
        charger = fleet.chargers[0]
        await fleet.wait_for(booted=1, timeout=5)
        everything = await central.call(charger.id, call.GetConfiguration())
        keys = [entry["key"] for entry in everything.configuration_key]
        assert "AuthorizationKey" not in keys  # write-only (1.6 security whitepaper)

        refused = await central.call(
            charger.id, call.ChangeConfiguration(key="AuthorizationKey", value="not-hex")
        )
        assert refused.status == "Rejected"
        new = "rotated-password-001"
        central.password = new  # the central system accepts the new one from now on
        accepted = await central.call(
            charger.id, call.ChangeConfiguration(key="AuthorizationKey", value=new.encode().hex())
        )
        assert accepted.status == "Accepted"
        await central.wait(lambda: charger.connects == 2 and charger.booted.is_set(), 5)
        assert charger.password == new
