"""Charger password rotation end to end: API -> registry -> bridge -> simulated charger
(ChangeConfiguration AuthorizationKey) -> the charger reconnects with the new password."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from e2e_operations import PASSWORD, Platform, platform, reported
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from simulator.connections import basic_auth


@pytest.fixture
async def ops(tmp_path: Path, mosquitto_url: str) -> AsyncIterator[Platform]:
    async with platform(tmp_path, mosquitto_url, chargers=1, command_timeout=3.0) as p:
        yield p


async def rotation_until(
    ops: Platform, charger_id: str, check: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    last: dict[str, Any] = {}
    for _ in range(200):
        answer = await ops.api.get(f"/chargers/{charger_id}/credentials")
        assert answer.status_code == 200, answer.text
        last = answer.json()
        if check(last):
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out; last rotation: {last}")


async def upgrade_status(ops: Platform, charger_id: str, password: str) -> int:
    url = f"ws://127.0.0.1:{ops.bridge.port}/ocpp/{charger_id}"
    headers = {"Authorization": basic_auth(charger_id, password)}
    try:
        async with connect(url, subprotocols=["ocpp1.6"], additional_headers=headers):  # type: ignore[list-item]
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


async def test_a_rotated_password_reaches_the_charger_and_the_old_one_stops_working(
    ops: Platform,
) -> None:
    assert ops.fleet is not None
    charger = ops.fleet.chargers[0]
    await ops.until(charger.id, lambda d: reported(d).get("connection", {}).get("online"))
    connects = charger.connects

    asked = await ops.api.post(f"/chargers/{charger.id}/credentials/rotate")
    assert asked.status_code == 202, asked.text
    assert asked.json()["status"] == "pending"
    assert set(asked.json()) == {"rotationId", "status", "reason", "requestedAt", "updatedAt"}
    again = await ops.api.post(f"/chargers/{charger.id}/credentials/rotate")
    assert again.status_code in (202, 409)  # 409 while open; 202 only if already done

    done = await rotation_until(ops, charger.id, lambda r: r["status"] == "done")
    assert done["rotationId"] == asked.json()["rotationId"]
    assert charger.password != PASSWORD and charger.password is not None
    assert len(charger.password) == 20
    assert charger.connects > connects  # it reconnected with the new password
    assert await upgrade_status(ops, charger.id, PASSWORD) == 401
    document = await ops.until(
        charger.id,
        lambda d: reported(d).get("security", {}).get("credentials", {}).get("status") == "done",
    )
    assert charger.password not in json.dumps(document)
    assert charger.password.encode().hex() not in json.dumps(document)
    sent = [p for action, p in charger.received if action == "ChangeConfiguration"]
    assert sent == [{"key": "AuthorizationKey", "value": charger.password.encode().hex()}]

    audit = await ops.api.get(f"/chargers/{charger.id}/audit")
    assert audit.status_code == 200, audit.text
    rotations = [e for e in audit.json() if e["action"] == "credentials.rotate"]
    statuses = [e["patch"]["status"] for e in reversed(rotations)]
    # "accepted" is there unless the charger reconnected before its answer was stored.
    assert statuses in (["pending", "accepted", "done"], ["pending", "done"])
    assert rotations[0]["actor"] == "charger"
    assert charger.password not in audit.text
    row = await ops.backend.db.fetchone(
        "SELECT secret FROM charger_credential_rotations WHERE charger_id = ?", (charger.id,)
    )
    assert row == (None,)


async def test_a_refused_rotation_fails_and_the_old_password_keeps_working(
    ops: Platform,
) -> None:
    assert ops.fleet is not None
    charger = ops.fleet.chargers[0]
    await ops.until(charger.id, lambda d: reported(d).get("connection", {}).get("online"))
    charger.refuse_authorization_key = True

    asked = await ops.api.post(f"/chargers/{charger.id}/credentials/rotate")
    assert asked.status_code == 202, asked.text
    failed = await rotation_until(ops, charger.id, lambda r: r["status"] == "failed")
    assert failed["reason"] == "Rejected"
    assert charger.password == PASSWORD
    audit = (await ops.api.get(f"/chargers/{charger.id}/audit")).json()
    assert audit[0]["action"] == "credentials.rotate"
    assert audit[0]["outcome"] == "rejected" and audit[0]["detail"] == "Rejected"
    # A second charger connection with the old password is still let in (and replaces
    # the simulator's, which then reconnects with the same old password).
    assert await upgrade_status(ops, charger.id, PASSWORD) == 101


async def test_rotations_need_an_admin_and_a_registered_charger(ops: Platform) -> None:
    assert ops.fleet is not None
    charger = ops.fleet.chargers[0]
    missing = await ops.api.post("/chargers/NOPE-1/credentials/rotate")
    assert missing.status_code == 404
    none_yet = await ops.api.get(f"/chargers/{charger.id}/credentials")
    assert none_yet.status_code == 404
    anonymous = await ops.api.post(
        f"/chargers/{charger.id}/credentials/rotate", headers={"Authorization": ""}
    )
    assert anonymous.status_code == 401


async def test_a_charger_offline_when_asked_gets_its_new_password_at_its_next_boot(
    ops: Platform,
) -> None:
    assert ops.fleet is not None
    charger = ops.fleet.chargers[0]
    await ops.until(charger.id, lambda d: reported(d).get("connection", {}).get("online"))
    charger.go_offline(2.0)
    await ops.until(charger.id, lambda d: not reported(d)["connection"]["online"])

    asked = await ops.api.post(f"/chargers/{charger.id}/credentials/rotate")
    assert asked.status_code == 202, asked.text
    assert (await ops.api.get(f"/chargers/{charger.id}/credentials")).json()["status"] == (
        "pending"
    )
    await rotation_until(ops, charger.id, lambda r: r["status"] == "done")
    assert charger.password != PASSWORD
    assert await upgrade_status(ops, charger.id, PASSWORD) == 401
