"""Password rotations carried by the bridge: ChangeConfiguration AuthorizationKey, the
charger's answer into the registry, the shadow and the audit log."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import MqttWatcher, OpenCharger, RawCharger

from bridge import Bridge
from chargetwin.audit import AuditLog
from twin.registry import ChargerRegistry, RotationStatus


def registry_of(bridge: Bridge) -> ChargerRegistry:
    assert bridge.server is not None
    return bridge.server.registry


async def ask_rotation(bridge: Bridge, watcher: MqttWatcher, charger: RawCharger) -> str:
    """Store a rotation as the API does and tell the bridge; the new password."""
    registry = registry_of(bridge)
    rotation = await registry.start_rotation(charger.charger_id)
    watcher.publish(
        bridge.topics.command(charger.charger_id),
        {"name": "rotate-credentials", "clientToken": rotation.rotation_id},
    )
    found = await registry.rotation_secret(charger.charger_id)
    assert found is not None
    return found[1]


async def authorization_key_call(charger: RawCharger, password: str) -> list[Any]:
    call = await charger.next_call()
    assert call[2:] == [
        "ChangeConfiguration",
        {"key": "AuthorizationKey", "value": password.encode().hex()},
    ]
    return call


async def rotation_status(bridge: Bridge, watcher: MqttWatcher, charger_id: str) -> Any:
    shadow = bridge.topics.shadow(charger_id, "update")
    report = await watcher.wait_for(
        shadow, lambda m: "security" in m["state"]["reported"], timeout=5
    )
    return report["state"]["reported"]["security"]["credentials"]


@pytest.mark.parametrize(
    ("answer", "status", "reason"),
    [
        ({"status": "NotSupported"}, "failed", "NotSupported"),
        ({"status": "Rejected"}, "failed", "Rejected"),
        ({"status": "RebootRequired"}, "accepted", "RebootRequired"),
        ({"status": "Accepted"}, "accepted", None),
        ("CALLERROR", "failed", "CALLERROR NotImplemented"),
    ],
)
async def test_the_chargers_answer_decides_the_rotation(
    bridge: Bridge,
    open_charger: OpenCharger,
    watcher: MqttWatcher,
    answer: Any,
    status: str,
    reason: str | None,
) -> None:
    charger = await open_charger()
    await charger.boot()
    password = await ask_rotation(bridge, watcher, charger)
    call = await authorization_key_call(charger, password)
    if answer == "CALLERROR":
        await charger.ws.send(json.dumps([4, call[1], "NotImplemented", "", {}]))
    else:
        await charger.reply(call, answer)
    reported = await rotation_status(bridge, watcher, charger.charger_id)
    assert (reported["status"], reported["reason"]) == (status, reason)
    published = b"".join(payload for _, payload in list(watcher.messages))
    assert password.encode() not in published
    assert password.encode().hex().encode() not in published
    rotation = await registry_of(bridge).rotation(charger.charger_id)
    assert rotation is not None and rotation.status == RotationStatus(status)
    assert bridge.db is not None
    entries = await AuditLog(bridge.db).list(charger_id=charger.charger_id)
    assert [(e.actor, e.patch["status"], e.detail) for e in entries] == [("bridge", status, reason)]


async def test_no_answer_leaves_it_pending_and_the_next_boot_sends_it_again(
    bridge: Bridge, open_charger: OpenCharger, watcher: MqttWatcher
) -> None:
    charger = await open_charger()
    await charger.boot()
    password = await ask_rotation(bridge, watcher, charger)
    await authorization_key_call(charger, password)  # never answered
    await charger.close()

    again = await open_charger(charger.charger_id)  # the old password still works
    await again.result("BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"})
    calls = [await again.next_call(timeout=8), await again.next_call(timeout=8)]
    rotation_call = next(c for c in calls if c[2] == "ChangeConfiguration")
    assert rotation_call[3]["value"] == password.encode().hex()
    for call in calls:
        await again.reply(
            call,
            {"configurationKey": []} if call[2] == "GetConfiguration" else {"status": "Accepted"},
        )
    assert (await rotation_status(bridge, watcher, again.charger_id))["status"] == "accepted"
