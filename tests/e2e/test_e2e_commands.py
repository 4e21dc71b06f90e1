"""Operator commands end to end: API -> MQTT -> bridge -> simulated charger -> and back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from e2e_operations import Platform, platform, reported

from api.ftp_uploads import FtpUploads


@pytest.fixture
async def ops(tmp_path: Path, mosquitto_url: str) -> AsyncIterator[Platform]:
    async with platform(tmp_path, mosquitto_url, chargers=1, command_timeout=3.0) as p:
        yield p


async def test_reset_and_get_configuration_reach_the_charger(ops: Platform) -> None:
    assert ops.fleet is not None
    charger = ops.fleet.chargers[0]
    await ops.until(charger.id, lambda d: reported(d).get("connection", {}).get("online"))

    config = await ops.api.post(
        f"/chargers/{charger.id}/commands/get-configuration",
        json={"key": ["HeartbeatInterval"]},
    )
    assert config.status_code == 200, config.text
    keys = config.json()["response"]["configurationKey"]
    assert [k["key"] for k in keys] == ["HeartbeatInterval"]
    assert keys[0]["value"] == charger.config.get("HeartbeatInterval")

    reset = await ops.api.post(f"/chargers/{charger.id}/commands/reset", json={"type": "Soft"})
    assert reset.status_code == 200, reset.text
    assert reset.json() == {
        "chargerId": charger.id,
        "name": "reset",
        "response": {"status": "Accepted"},
    }
    # The charger really reboots: a second boot.
    for _ in range(100):
        if charger.boots >= 2:
            break
        await asyncio.sleep(0.1)
    assert charger.boots >= 2
    audit = (await ops.api.get(f"/chargers/{charger.id}/audit")).json()
    actions = [(e["action"], e["outcome"]) for e in audit]
    assert ("command.reset", "accepted") in actions
    assert ("command.get-configuration", "accepted") in actions


async def test_get_diagnostics_uploads_to_the_api(ops: Platform) -> None:
    assert ops.fleet is not None
    charger = ops.fleet.chargers[0]
    await ops.until(charger.id, lambda d: reported(d).get("connection", {}).get("online"))
    answer = await ops.api.post(f"/chargers/{charger.id}/commands/get-diagnostics", json={})
    assert answer.status_code == 200, answer.text
    name = answer.json()["response"]["fileName"]
    for _ in range(100):
        listing = (await ops.api.get(f"/chargers/{charger.id}/diagnostics")).json()
        if listing:
            break
        await asyncio.sleep(0.1)
    assert [f["name"] for f in listing] == [name]
    body = await ops.api.get(f"/chargers/{charger.id}/diagnostics/{name}")
    assert body.status_code == 200
    assert f"charger={charger.id}".encode() in body.content


async def test_get_diagnostics_over_ftp_end_to_end(ops: Platform) -> None:
    """API -> bridge -> simulated charger, which uploads with ftplib to the API's FTP
    endpoint using the one-time grant in its location; the HTTP API then serves the file."""
    assert ops.fleet is not None and ops.backend.operations is not None
    charger = ops.fleet.chargers[0]
    await ops.until(charger.id, lambda d: reported(d).get("connection", {}).get("online"))
    ftp = FtpUploads(ops.backend.operations.uploads, "127.0.0.1", 0)
    ops.backend.operations.ftp_port = ftp.start()
    try:
        answer = await ops.api.post(
            f"/chargers/{charger.id}/commands/get-diagnostics", json={"protocol": "ftp"}
        )
        assert answer.status_code == 200, answer.text
        name = answer.json()["response"]["fileName"]
        for _ in range(150):
            listing = (await ops.api.get(f"/chargers/{charger.id}/diagnostics")).json()
            if listing:
                break
            await asyncio.sleep(0.1)
    finally:
        ftp.stop()
    assert [f["name"] for f in listing] == [name]
    body = await ops.api.get(f"/chargers/{charger.id}/diagnostics/{name}")
    assert f"charger={charger.id}".encode() in body.content
    audit = (await ops.api.get(f"/chargers/{charger.id}/audit")).json()
    assert audit[0]["patch"]["location"].startswith("(upload grant for ftp")


async def test_an_offline_charger_answers_409(ops: Platform) -> None:
    assert ops.fleet is not None
    charger = ops.fleet.chargers[0]
    await ops.until(charger.id, lambda d: reported(d).get("connection", {}).get("online"))
    charger.go_offline(30)
    await ops.until(charger.id, lambda d: reported(d)["connection"]["online"] is False)
    answer = await ops.api.post(f"/chargers/{charger.id}/commands/reset", json={})
    assert answer.status_code == 409, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["type"].endswith("charger-offline")
