"""Password rotation for OCPP 2.0.1 stations: SetVariables SecurityCtrlr/BasicAuthPassword,
the old password accepted until the station connects with the new one, audited.

The station is the ``ocpp`` library's ``v201.ChargePoint`` (it validates the bridge's
SetVariables against the official schema), over real websockets and the real broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from conftest import PASSWORD, MqttWatcher, basic, eventually, url_of
from test_bridge_ocpp201 import OCPP201, Station
from websockets.asyncio.client import ClientConnection, connect

from bridge import Bridge
from chargetwin.audit import AuditLog
from twin.registry import ChargerRegistry, RotationStatus

OpenStation = Callable[..., Awaitable[Station]]


@pytest.fixture
async def open_station(bridge: Bridge) -> AsyncIterator[OpenStation]:
    """Connect a library station with ``password`` (registering it when new) and boot it."""
    opened: list[tuple[asyncio.Task[None], ClientConnection]] = []

    async def open_(charger_id: str, password: str = PASSWORD, *, boot: bool = True) -> Station:
        registry = registry_of(bridge)
        if not await registry.exists(charger_id):
            await registry.register(charger_id, PASSWORD)
        ws = await connect(
            url_of(bridge, charger_id),
            subprotocols=[OCPP201],  # type: ignore[list-item]
            additional_headers=basic(charger_id, password),
            ping_interval=None,
        )
        station = Station(charger_id, ws)
        task = asyncio.get_running_loop().create_task(station.start())
        opened.append((task, ws))
        if boot:
            assert (await station.boot()).status == "Pending"
            async with asyncio.timeout(10):
                await station.accepted.wait()
        return station

    yield open_
    for task, ws in opened:
        await ws.close()
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


def registry_of(bridge: Bridge) -> ChargerRegistry:
    assert bridge.server is not None
    return bridge.server.registry


async def ask_rotation(bridge: Bridge, watcher: MqttWatcher, charger_id: str) -> str:
    """Store a rotation as the API does and tell the bridge; the new password."""
    registry = registry_of(bridge)
    rotation = await registry.start_rotation(charger_id)
    watcher.publish(
        bridge.topics.command(charger_id),
        {"name": "rotate-credentials", "clientToken": rotation.rotation_id},
    )
    found = await registry.rotation_secret(charger_id)
    assert found is not None
    return found[1]


def password_calls(station: Station) -> list[dict[str, Any]]:
    return [
        data
        for action, data in station.calls
        if action == "SetVariables" and data["variable"]["name"] == "BasicAuthPassword"
    ]


async def rotation_status(bridge: Bridge, watcher: MqttWatcher, charger_id: str) -> Any:
    shadow = bridge.topics.shadow(charger_id, "update")
    report = await watcher.wait_for(
        shadow, lambda m: "security" in m["state"]["reported"], timeout=5
    )
    return report["state"]["reported"]["security"]["credentials"]


async def audit(bridge: Bridge, charger_id: str) -> list[tuple[str, str, str | None]]:
    assert bridge.db is not None
    entries = await AuditLog(bridge.db).list(charger_id=charger_id)
    return [(e.actor, e.patch["status"], e.detail) for e in entries]


@pytest.mark.parametrize(
    ("answer", "status", "reason"),
    [
        ("Accepted", "accepted", None),
        ("RebootRequired", "accepted", "RebootRequired"),
        ("Rejected", "failed", "Rejected"),
        ("UnknownVariable", "failed", "UnknownVariable"),
    ],
)
async def test_the_stations_attribute_status_decides_the_rotation(
    bridge: Bridge,
    open_station: OpenStation,
    watcher: MqttWatcher,
    answer: str,
    status: str,
    reason: str | None,
) -> None:
    charger_id = f"rot-{uuid.uuid4().hex[:8]}"
    station = await open_station(charger_id)
    station.variable_status = {"BasicAuthPassword": answer}
    password = await ask_rotation(bridge, watcher, charger_id)
    await eventually(lambda: password_calls(station), what="SetVariables BasicAuthPassword")
    (sent,) = password_calls(station)
    assert sent["component"] == {"name": "SecurityCtrlr"}
    assert sent["attribute_value"] == password
    assert "attribute_type" not in sent  # the Actual attribute

    reported = await rotation_status(bridge, watcher, charger_id)
    assert (reported["status"], reported["reason"]) == (status, reason)
    published = b"".join(payload for _, payload in list(watcher.messages))
    assert password.encode() not in published
    rotation = await registry_of(bridge).rotation(charger_id)
    assert rotation is not None and rotation.status == RotationStatus(status)
    assert await audit(bridge, charger_id) == [("bridge", status, reason)]
    registry = registry_of(bridge)
    assert await registry.verify(charger_id, PASSWORD)  # the old one stays valid
    assert await registry.verify(charger_id, password) is (status == "accepted")


async def test_the_old_password_works_until_the_station_connects_with_the_new_one(
    bridge: Bridge, open_station: OpenStation, watcher: MqttWatcher
) -> None:
    charger_id = f"rot-{uuid.uuid4().hex[:8]}"
    station = await open_station(charger_id)
    password = await ask_rotation(bridge, watcher, charger_id)
    await eventually(lambda: password_calls(station), what="SetVariables BasicAuthPassword")
    assert (await rotation_status(bridge, watcher, charger_id))["status"] == "accepted"

    # Reconnecting with the old password still works while the rotation is open.
    await station._connection.close()
    again = await open_station(charger_id, PASSWORD, boot=False)
    await again._connection.close()
    registry = registry_of(bridge)
    rotation = await registry.rotation(charger_id)
    assert rotation is not None and rotation.status is RotationStatus.ACCEPTED

    # The station connects with the new one: the rotation is done, the old one is gone.
    await open_station(charger_id, password)
    rotation = await registry.rotation(charger_id)
    assert rotation is not None and rotation.status is RotationStatus.DONE
    assert await registry.verify(charger_id, PASSWORD) is False
    assert ("charger", "done", None) in await audit(bridge, charger_id)


async def test_a_station_offline_at_the_rotation_gets_it_after_its_boot(
    bridge: Bridge, open_station: OpenStation, watcher: MqttWatcher
) -> None:
    charger_id = f"rot-{uuid.uuid4().hex[:8]}"
    await registry_of(bridge).register(charger_id, PASSWORD)
    password = await ask_rotation(bridge, watcher, charger_id)  # nobody holds the station
    station = await open_station(charger_id)
    await eventually(lambda: password_calls(station), what="SetVariables after the boot")
    assert password_calls(station)[0]["attribute_value"] == password
    assert (await rotation_status(bridge, watcher, charger_id))["status"] == "accepted"
