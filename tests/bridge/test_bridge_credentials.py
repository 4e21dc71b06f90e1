"""Password rotations carried by the bridge: ChangeConfiguration AuthorizationKey, the
charger's answer into the registry, the shadow and the audit log."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from conftest import PASSWORD, MakeBridge, MqttWatcher, OpenCharger, RawCharger
from websockets.exceptions import InvalidStatus

from bridge import Bridge
from chargetwin.audit import AuditLog
from twin.registry import EXPIRED_REASON, ChargerRegistry, RotationStatus


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


async def accepted_rotation(
    bridge: Bridge, watcher: MqttWatcher, charger: RawCharger
) -> tuple[str, str]:
    """A rotation the charger accepted and never connected with: (old, new) password."""
    await charger.boot()
    password = await ask_rotation(bridge, watcher, charger)
    await charger.reply(await authorization_key_call(charger, password), {"status": "Accepted"})
    assert (await rotation_status(bridge, watcher, charger.charger_id))["status"] == "accepted"
    return PASSWORD, password


async def expired_audit(bridge: Bridge, charger_id: str) -> list[tuple[str, str, str | None]]:
    assert bridge.db is not None
    entries = await AuditLog(bridge.db).list(charger_id=charger_id)
    return [(e.actor, e.patch["status"], e.detail) for e in entries if e.patch["status"] == "done"]


async def test_the_old_password_expires_after_its_grace_when_the_charger_never_reconnects(
    make_bridge: MakeBridge, open_charger: OpenCharger, watcher: MqttWatcher
) -> None:
    bridge = await make_bridge(rotation_expiry_interval=0.1)
    charger = await open_charger(target=bridge)
    old, new = await accepted_rotation(bridge, watcher, charger)
    registry = registry_of(bridge)
    await asyncio.sleep(0.3)  # a few expiry rounds within the grace: nothing ends
    assert await registry.verify(charger.charger_id, old)
    assert await expired_audit(bridge, charger.charger_id) == []
    registry.old_password_grace = 0.0  # the grace passes
    for _ in range(100):  # the expiry runs every 0.1 s here: 5 s at most
        if await expired_audit(bridge, charger.charger_id):
            break
        await asyncio.sleep(0.05)
    assert await expired_audit(bridge, charger.charger_id) == [("bridge", "done", EXPIRED_REASON)]
    rotation = await registry.rotation(charger.charger_id)
    assert rotation is not None
    assert (rotation.status, rotation.reason) == (RotationStatus.DONE, EXPIRED_REASON)
    assert await registry.verify(charger.charger_id, old) is False
    assert await registry.verify(charger.charger_id, new) is True


async def test_a_check_of_the_old_password_after_its_grace_ends_the_rotation(
    bridge: Bridge, open_charger: OpenCharger, watcher: MqttWatcher
) -> None:
    """Even before the periodic expiry runs (every minute by default), an upgrade with
    the old password past its grace is refused with 401 and ends the rotation."""
    charger = await open_charger()
    old, new = await accepted_rotation(bridge, watcher, charger)
    registry_of(bridge).old_password_grace = 0.0
    await charger.close()
    with pytest.raises(InvalidStatus) as refused:
        await open_charger(charger.charger_id, password=old)
    assert refused.value.response.status_code == 401
    assert await expired_audit(bridge, charger.charger_id) == [("bridge", "done", EXPIRED_REASON)]
    again = await open_charger(charger.charger_id, password=new)
    await again.result("BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"})
