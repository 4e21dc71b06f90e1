"""`chargetwin up` as a real process: a raw OCPP client, the HTTP API and a restart.

Nothing here imports the platform: the charger is a hand-written OCPP-J client over a real
websocket, the operator is plain HTTP, so the whole contract is checked from outside.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from brokers import free_port
from websockets.asyncio.client import ClientConnection, connect

ADMIN = "ct_e2e_admin_" + uuid.uuid4().hex


class Platform:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.api_port, self.ocpp_port, self.mqtt_port = free_port(), free_port(), free_port()
        self.proc: asyncio.subprocess.Process | None = None
        self.log = data_dir / "platform.log"

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}/api/v1"

    async def start(self) -> None:
        env = {**os.environ, "CHARGETWIN_ADMIN_TOKEN": ADMIN}
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "launch.cli",
                "up",
                "--api-port",
                str(self.api_port),
                "--ocpp-port",
                str(self.ocpp_port),
                "--mqtt-port",
                str(self.mqtt_port),
                "--data-dir",
                str(self.data_dir),
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient() as http:
            while time.monotonic() < deadline:
                assert self.proc.returncode is None, self.log.read_text()
                try:
                    if (await http.get(f"{self.api}/health")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
            else:
                raise AssertionError("platform did not start:\n" + self.log.read_text())
        await _wait_port(self.ocpp_port)

    async def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(self.proc.wait(), 30)
        self.proc = None
        return code


async def _wait_port(port: int) -> None:
    for _ in range(100):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            await writer.wait_closed()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[Platform]:
    p = Platform(tmp_path)
    await p.start()
    yield p
    if p.proc is not None:
        await p.stop()


class RawCharger:
    """An OCPP-J 1.6 charger written by hand: frames in, frames out."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.calls: asyncio.Queue[list[Any]] = asyncio.Queue()
        self.results: dict[str, asyncio.Future[list[Any]]] = {}
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for frame in self.ws:
            message = json.loads(frame)
            if message[0] == 2:
                await self.calls.put(message)
            elif message[1] in self.results:
                self.results.pop(message[1]).set_result(message)

    async def call(self, action: str, payload: dict[str, Any]) -> list[Any]:
        uid = uuid.uuid4().hex[:16]
        self.results[uid] = asyncio.get_running_loop().create_future()
        await self.ws.send(json.dumps([2, uid, action, payload]))
        return await asyncio.wait_for(self.results[uid], 10)

    async def next_call(self, action: str) -> list[Any]:
        while True:
            message = await asyncio.wait_for(self.calls.get(), 15)
            if message[2] == action:
                return message
            await self.answer(
                message,
                {"status": "Accepted", "configurationKey": []}
                if message[2] == "GetConfiguration"
                else {"status": "Accepted"},
            )

    async def answer(self, call: list[Any], payload: dict[str, Any]) -> None:
        await self.ws.send(json.dumps([3, call[1], payload]))

    async def close(self) -> None:
        await self.ws.close()
        self.reader.cancel()
        await asyncio.gather(self.reader, return_exceptions=True)


async def open_charger(p: Platform, charger_id: str, password: str) -> RawCharger:
    auth = base64.b64encode(f"{charger_id}:{password}".encode()).decode()
    ws = await connect(
        f"ws://127.0.0.1:{p.ocpp_port}/ocpp/{charger_id}",
        subprotocols=["ocpp1.6"],  # type: ignore[list-item]
        additional_headers={"Authorization": f"Basic {auth}"},
    )
    return RawCharger(ws)


async def eventually(check: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


async def test_a_charger_mirrored_reconfigured_and_kept_across_a_restart(
    platform: Platform,
) -> None:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(base_url=platform.api, headers=admin, timeout=10) as http:
        created = await http.post(
            "/chargers", json={"id": "E2E-1", "password": "e2e-password-00001"}
        )
        assert created.status_code == 201, created.text

        # A wrong password is refused at the upgrade.
        with pytest.raises(Exception, match="401"):
            await open_charger(platform, "E2E-1", "wrong-password")

        charger = await open_charger(platform, "E2E-1", "e2e-password-00001")
        try:
            boot = await charger.call(
                "BootNotification",
                {
                    "chargePointVendor": "Acme",
                    "chargePointModel": "AC-22",
                    "firmwareVersion": "1.0.0",
                },
            )
            assert boot[2]["status"] == "Accepted"
            get_config = await charger.next_call("GetConfiguration")
            await charger.answer(
                get_config,
                {
                    "configurationKey": [
                        {"key": "HeartbeatInterval", "readonly": False, "value": "300"}
                    ]
                },
            )
            status = await charger.call(
                "StatusNotification",
                {"connectorId": 1, "errorCode": "NoError", "status": "Available"},
            )
            assert status[2] == {}

            async def mirrored() -> dict[str, Any] | None:
                doc = (await http.get("/chargers/E2E-1/shadow")).json()
                reported = doc["state"]["reported"]
                ok = (
                    reported.get("connectors", {}).get("1", {}).get("status") == "Available"
                    and reported.get("config", {}).get("HeartbeatInterval") == "300"
                )
                return doc if ok else None

            doc = await eventually(mirrored)
            assert doc["state"]["reported"]["chargePoint"]["vendor"] == "Acme"
            assert doc["state"]["reported"]["connection"]["online"] is True

            # The operator asks for a change; the charger receives it and accepts it.
            patch = await http.patch(
                "/chargers/E2E-1/shadow/desired",
                json={"config": {"HeartbeatInterval": "60"}},
                headers={"If-Match": f'"{doc["version"]}"', **admin},
            )
            assert patch.status_code in (200, 412), patch.text
            if patch.status_code == 412:  # the shadow moved on in between: read and retry
                version = (await http.get("/chargers/E2E-1/shadow")).json()["version"]
                patch = await http.patch(
                    "/chargers/E2E-1/shadow/desired",
                    json={"config": {"HeartbeatInterval": "60"}},
                    headers={"If-Match": f'"{version}"', **admin},
                )
                assert patch.status_code == 200, patch.text
            change = await charger.next_call("ChangeConfiguration")
            assert change[3] == {"key": "HeartbeatInterval", "value": "60"}
            await charger.answer(change, {"status": "Accepted"})

            async def converged() -> dict[str, Any] | None:
                doc = (await http.get("/chargers/E2E-1/shadow")).json()
                ok = (
                    "delta" not in doc["state"]
                    and doc["state"]["reported"]["config"]["HeartbeatInterval"] == "60"
                )
                return doc if ok else None

            await eventually(converged)
        finally:
            await charger.close()

        async def offline() -> dict[str, Any] | None:
            doc = (await http.get("/chargers/E2E-1/shadow")).json()
            return doc if doc["state"]["reported"]["connection"]["online"] is False else None

        before = await eventually(offline)

    assert await platform.stop() == 0
    await platform.start()
    async with httpx.AsyncClient(base_url=platform.api, headers=admin, timeout=10) as http:
        after = (await http.get("/chargers/E2E-1/shadow")).json()
    assert after == before


async def test_an_unregistered_charger_is_disconnected_and_stays_out(platform: Platform) -> None:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(base_url=platform.api, headers=admin, timeout=10) as http:
        created = await http.post(
            "/chargers", json={"id": "E2E-GONE", "password": "pw-gone-000000001"}
        )
        assert created.status_code == 201, created.text
        charger = await open_charger(platform, "E2E-GONE", "pw-gone-000000001")
        try:
            boot = await charger.call(
                "BootNotification", {"chargePointVendor": "Acme", "chargePointModel": "AC-22"}
            )
            assert boot[2]["status"] == "Accepted"
            await eventually(
                lambda: _shadow_online(http, "E2E-GONE"),
            )

            assert (await http.delete("/chargers/E2E-GONE")).status_code == 204
            await asyncio.wait_for(charger.ws.wait_closed(), 10)
            assert charger.ws.close_code == 1008
        finally:
            await charger.close()
        with pytest.raises(Exception, match="401"):
            await open_charger(platform, "E2E-GONE", "pw-gone-000000001")
        # The bridge's "offline" for the closed socket does not bring the shadow back.
        await asyncio.sleep(1.0)
        assert (await http.get("/chargers/E2E-GONE/shadow")).status_code == 404


async def _shadow_online(http: httpx.AsyncClient, charger_id: str) -> bool:
    answer = await http.get(f"/chargers/{charger_id}/shadow")
    if answer.status_code != 200:
        return False
    connection = answer.json()["state"]["reported"].get("connection", {})
    return connection.get("online") is True
