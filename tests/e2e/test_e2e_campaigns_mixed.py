"""A firmware campaign over a mixed fleet of one vendor/model: a simulated OCPP 1.6 charger
and an OCPP 2.0.1 station played by the ``ocpp`` library's ``v201.ChargePoint`` (which
validates every call of the bridge against the official 2.0.1 schemas), both reaching the
new version. Real websockets, bridge, twin, API (uvicorn, which also serves the image the
station downloads and checks), Mosquitto, and the campaign engine as ``fleet`` runs it.

The 2.0.1 station starts with its EVSE ``Occupied``: with ``onlyIdle`` the campaign does not
start on it until it is ``Available`` (2.0.1 has no ``Charging`` status).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from e2e_operations import MODEL, PASSWORD, Platform, platform
from ocpp.routing import after, on
from ocpp.v201 import ChargePoint, call, call_result
from websockets.asyncio.client import ClientConnection, connect

from fleet.rollouts import CampaignEngine
from twin.stores import ShadowFilter

IMAGE = b"\x7fCTFW-mixed" + bytes(range(256)) * 16
OLD, NEW = MODEL.firmware_version, "1.5.0"
STATION = "MIXED-201"


def iso_now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


class Station(ChargePoint):  # type: ignore[misc]  # the library ships no type information
    """A 2.0.1 station of the fleet's vendor/model: reports a small device model, downloads
    the image UpdateFirmware names, checks its SHA-256 and reports the progress, then asks
    to be rebooted (the test reconnects it on the new version)."""

    def __init__(self, charger_id: str, ws: ClientConnection, version: str) -> None:
        super().__init__(charger_id, ws, response_timeout=10)
        self.ws = ws
        self.version = version
        self.accepted = asyncio.Event()
        self.updates: list[dict[str, Any]] = []
        self.rebooting = asyncio.Event()

    async def boot(self) -> str:
        answer = await self.call(
            call.BootNotification(
                charging_station={
                    "vendor_name": MODEL.vendor,
                    "model": MODEL.model,
                    "firmware_version": self.version,
                },
                reason="FirmwareUpdate" if self.version == NEW else "PowerUp",
            )
        )
        if answer.status == "Accepted":
            self.accepted.set()
        return str(answer.status)

    async def port(self, status: str) -> None:
        await self.call(
            call.StatusNotification(
                timestamp=iso_now(), connector_status=status, evse_id=1, connector_id=1
            )
        )

    @on("GetBaseReport")
    def on_get_base_report(self, **_: Any) -> Any:
        return call_result.GetBaseReport(status="Accepted")

    @after("GetBaseReport")
    async def after_get_base_report(self, request_id: int, **_: Any) -> None:
        entry = {
            "component": {"name": "OCPPCommCtrlr"},
            "variable": {"name": "HeartbeatInterval"},
            "variable_attribute": [{"type": "Actual", "value": "300"}],
            "variable_characteristics": {"data_type": "integer", "supports_monitoring": False},
        }
        await self.call(
            call.NotifyReport(
                request_id=request_id, generated_at=iso_now(), seq_no=0, report_data=[entry]
            )
        )

    @on("TriggerMessage")
    def on_trigger_message(self, **_: Any) -> Any:
        return call_result.TriggerMessage(status="Accepted")

    @after("TriggerMessage")
    async def after_trigger_message(self, requested_message: str, **_: Any) -> None:
        if requested_message == "BootNotification":
            await self.boot()

    @on("UpdateFirmware")
    def on_update_firmware(self, request_id: int, firmware: dict[str, Any], **_: Any) -> Any:
        self.updates.append({"requestId": request_id, **firmware})
        return call_result.UpdateFirmware(status="Accepted")

    @after("UpdateFirmware")
    async def after_update_firmware(
        self, request_id: int, firmware: dict[str, Any], **_: Any
    ) -> None:
        location = firmware["location"]
        await self.progress("Downloading", request_id)
        async with httpx.AsyncClient() as http:
            image = await http.get(location)
        expected = parse_qs(urlsplit(location).query)["sha256"][0]
        if image.status_code != 200 or hashlib.sha256(image.content).hexdigest() != expected:
            await self.progress("DownloadFailed", request_id)
            return
        for status in ("Downloaded", "Installing", "InstallRebooting"):
            await self.progress(status, request_id)
        self.rebooting.set()

    async def progress(self, status: str, request_id: int) -> None:
        await self.call(call.FirmwareStatusNotification(status=status, request_id=request_id))


@pytest.fixture
async def ops(tmp_path: Path, mosquitto_url: str) -> AsyncIterator[Platform]:
    async with platform(tmp_path, mosquitto_url, chargers=1) as p:
        yield p


@contextlib.asynccontextmanager
async def station_on(ops: Platform, version: str) -> AsyncIterator[Station]:
    ws = await connect(
        f"ws://127.0.0.1:{ops.bridge.port}/ocpp/{STATION}",
        subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
        additional_headers=basic(STATION, PASSWORD),
        ping_interval=None,
    )
    station = Station(STATION, ws, version)
    task = asyncio.get_running_loop().create_task(station.start())
    try:
        assert await station.boot() == "Pending"
        async with asyncio.timeout(15):
            await station.accepted.wait()
        yield station
    finally:
        await ws.close()
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


async def until(
    what: Callable[[], Any], check: Callable[[Any], bool], timeout: float = 30.0
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await what()
        if check(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; last: {value}")
        await asyncio.sleep(0.2)


async def test_one_campaign_brings_a_1_6_charger_and_a_2_0_1_station_to_the_new_version(
    ops: Platform,
) -> None:
    fleet, api, backend = ops.fleet, ops.api, ops.backend
    assert fleet is not None and backend.campaigns is not None
    (charger,) = fleet.chargers
    answer = await api.post("/chargers", json={"id": STATION, "password": PASSWORD})
    assert answer.status_code == 201, answer.text
    uploaded = await api.post(
        "/firmware",
        data={"vendor": MODEL.vendor, "model": MODEL.model, "version": NEW},
        files={"file": ("fw.bin", IMAGE, "application/octet-stream")},
    )
    assert uploaded.status_code == 201, uploaded.text

    async with contextlib.AsyncExitStack() as stack:
        station = await stack.enter_async_context(station_on(ops, OLD))
        await station.port("Occupied")  # a vehicle is charging
        every = ShadowFilter(vendor=MODEL.vendor, model=MODEL.model, firmware_version=OLD)
        await until(lambda: backend.shadows.count(every), lambda n: n == 2)
        await ops.until(STATION, lambda d: d["state"]["reported"].get("connectors"))

        created = await api.post(
            "/campaigns",
            json={
                "name": "mixed 1.5.0",
                "firmwareId": uploaded.json()["id"],
                "target": {"vendor": MODEL.vendor, "model": MODEL.model, "firmwareVersion": OLD},
                "canary": 1,
                "successThreshold": 100,
                "maxConcurrent": 2,
                "retries": 0,
                "onlyIdle": True,
            },
        )
        assert created.status_code == 201, created.text
        cid = created.json()["id"]
        assert created.json()["total"] == 2

        async def state_of(charger_id: str) -> str:
            rows = await api.get(f"/campaigns/{cid}/chargers", params={"limit": 10})
            return next(r["state"] for r in rows.json()["items"] if r["id"] == charger_id)

        async def get() -> dict[str, Any]:
            response = await api.get(f"/campaigns/{cid}")
            assert response.status_code == 200, response.text
            return dict(response.json())

        engine = CampaignEngine(
            backend.campaigns, backend.shadows, backend.shadow_client, interval=0.25
        )
        async with engine.running():
            await asyncio.sleep(1.5)  # several ticks: the occupied station is not started
            assert await state_of(STATION) == "queued"
            assert station.updates == []
            await station.port("Available")

            async with asyncio.timeout(30):
                await station.rebooting.wait()
            (update,) = station.updates
            assert update["location"].startswith(ops.api_url)
            await stack.aclose()  # it reboots into the new image ...
            async with station_on(ops, NEW) as rebooted:
                # ... and says Installed for the same request after its boot.
                await rebooted.progress("Installed", update["requestId"])
                done = await until(get, lambda c: c["state"] in ("completed", "paused"))
                assert done["state"] == "completed", done
                assert done["counts"]["installed"] == 2
                assert rebooted.updates == []

    on_new = ShadowFilter(firmware_version=NEW, has_delta=False, limit=10)
    assert sorted(s.charger_id for s in await backend.shadows.list(on_new)) == sorted(
        [charger.id, STATION]
    )
    assert charger.firmware_version == NEW
    assert [a for a, _ in charger.received if a == "UpdateFirmware"] == ["UpdateFirmware"]
    shadow = await ops.shadow(STATION)
    reported = shadow["state"]["reported"]
    assert reported["connection"]["ocppVersion"] == "2.0.1"
    assert reported["firmware"]["status"] == "Installed"
    assert reported["firmware"]["requested"]["requestId"] == update["requestId"]
    assert "refused" not in reported or not reported["refused"].get("firmware")
