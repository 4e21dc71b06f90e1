"""Desired firmware for OCPP 2.0.1 stations: UpdateFirmware from the catalog, progress by
``requestId``, installed when the station boots on the new version.

The station is the ``ocpp`` library's ``v201.ChargePoint`` (it validates the bridge's
UpdateFirmware against the official schema), over real websockets, with the real broker
and the real twin (the shadow carries what one connection asked to the next one).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import PASSWORD, MqttWatcher, RunningTwin, basic, eventually, url_of
from ocpp.routing import after, on
from ocpp.v201 import call, call_result
from test_bridge_ocpp201 import OCPP201, Station
from websockets.asyncio.client import ClientConnection, connect

from bridge import Bridge
from twin.catalog import FirmwareCatalog

SHA = "cd" * 32
OLD, NEW = "2.0.0", "2.1.0"
PROGRESS = ("Downloading", "Downloaded", "SignatureVerified", "Installing", "InstallRebooting")


class FirmwareStation(Station):
    """A 2.0.1 station that runs ``version`` and answers UpdateFirmware with ``answer``,
    then reports ``progress`` with the request's id (or ``progress_id`` when set)."""

    def __init__(self, charger_id: str, ws: ClientConnection, version: str) -> None:
        super().__init__(charger_id, ws)
        self.ws = ws
        self.version = version
        self.answer = "Accepted"
        self.progress: tuple[str, ...] = PROGRESS
        self.updates: list[dict[str, Any]] = []
        self.reported_all = asyncio.Event()

    async def boot(self) -> Any:
        answer = await self.call(
            call.BootNotification(
                charging_station={
                    "model": "Wallbox-201",
                    "vendor_name": "VendorX",
                    "firmware_version": self.version,
                },
                reason="FirmwareUpdate" if self.version == NEW else "PowerUp",
            )
        )
        self.boots.append(answer)
        if answer.status == "Accepted":
            self.accepted.set()
        return answer

    @on("UpdateFirmware")
    def on_update_firmware(self, request_id: int, firmware: dict[str, Any], **kw: Any) -> Any:
        self.updates.append({"requestId": request_id, "firmware": firmware, **kw})
        return call_result.UpdateFirmware(status=self.answer)

    @after("UpdateFirmware")
    async def after_update_firmware(self, request_id: int, **_: Any) -> None:
        if self.answer != "Accepted":
            return
        for status in self.progress:
            await self.status(status, request_id)
        self.reported_all.set()

    async def status(self, status: str, request_id: int) -> None:
        await self.call(call.FirmwareStatusNotification(status=status, request_id=request_id))


OpenFirmwareStation = Callable[..., Awaitable[FirmwareStation]]


@pytest.fixture
async def open_station(bridge: Bridge) -> AsyncIterator[OpenFirmwareStation]:
    """Connect (registering when new) and boot a firmware station; close them after."""
    opened: list[tuple[asyncio.Task[None], ClientConnection]] = []

    async def open_(charger_id: str, version: str = OLD) -> FirmwareStation:
        assert bridge.server is not None
        if not await bridge.server.registry.exists(charger_id):
            await bridge.server.registry.register(charger_id, PASSWORD)
        ws = await connect(
            url_of(bridge, charger_id),
            subprotocols=[OCPP201],  # type: ignore[list-item]
            additional_headers=basic(charger_id, PASSWORD),
            ping_interval=None,
        )
        station = FirmwareStation(charger_id, ws, version)
        task = asyncio.get_running_loop().create_task(station.start())
        opened.append((task, ws))
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


async def add_image(bridge: Bridge, **extra: Any) -> None:
    assert bridge.db is not None
    await FirmwareCatalog(bridge.db).add(
        vendor="VendorX",
        model="Wallbox-201",
        version=NEW,
        sha256=SHA,
        size=10,
        source="upload",
        **extra,
    )


def desire(watcher: MqttWatcher, bridge: Bridge, charger_id: str, version: str) -> None:
    """Write ``desired.firmware.version`` as an operator does (the twin stamps it now)."""
    watcher.publish(
        bridge.topics.shadow(charger_id, "update"),
        {"state": {"desired": {"firmware": {"version": version}}}},
    )


def refused(reported: dict[str, Any]) -> dict[str, Any]:
    return dict((reported.get("refused") or {}).get("firmware") or {})


async def test_update_firmware_reaches_the_new_version_across_the_reboot(
    bridge: Bridge, open_station: OpenFirmwareStation, twin: RunningTwin, watcher: MqttWatcher
) -> None:
    await add_image(bridge, signing_certificate="-----BEGIN CERTIFICATE-----", signature="c2ln")
    charger_id = f"fw-{uuid.uuid4().hex[:8]}"
    station = await open_station(charger_id)
    desire(watcher, bridge, charger_id, NEW)

    await eventually(lambda: station.updates, timeout=10, what="UpdateFirmware")
    (update,) = station.updates
    firmware = update["firmware"]
    location = firmware["location"]
    assert location.startswith(f"http://127.0.0.1:8000/api/v1/firmware/files/{SHA}?")
    assert parse_qs(urlsplit(location).query) == {"sha256": [SHA], "version": [NEW]}
    assert firmware["retrieve_date_time"]
    assert firmware["signing_certificate"] == "-----BEGIN CERTIFICATE-----"
    assert firmware["signature"] == "c2ln"
    assert (update["retries"], update["retry_interval"]) == (3, 60)
    request_id = update["requestId"]

    async with asyncio.timeout(10):
        await station.reported_all.wait()
    reported = await twin.wait_reported(
        charger_id, lambda r: (r.get("firmware") or {}).get("status") == "InstallRebooting"
    )
    assert reported["firmware"]["requested"]["requestId"] == request_id
    assert reported["firmware"]["requested"]["version"] == NEW
    events = watcher.on(bridge.topics.events(charger_id, "firmware"))
    assert [e["status"] for e in events] == list(PROGRESS)
    assert {e["requestId"] for e in events} == {request_id}

    # The station reboots into the new image on a new connection, then says Installed.
    await station.ws.close()
    rebooted = await open_station(charger_id, NEW)
    await rebooted.status("Installed", request_id)
    reported = await twin.wait_reported(
        charger_id,
        lambda r: (
            r.get("firmware", {}).get("version") == NEW
            and r["firmware"].get("status") == "Installed"
        ),
    )
    assert not refused(reported)
    document = await twin.document(charger_id)
    assert "firmware" not in (document["state"].get("delta") or {})
    assert rebooted.updates == []  # it runs the desired version: nothing asked again


async def test_refusals_and_failures_of_our_request_are_recorded_not_retried(
    bridge: Bridge, open_station: OpenFirmwareStation, twin: RunningTwin, watcher: MqttWatcher
) -> None:
    await add_image(bridge)
    charger_id = f"fw-{uuid.uuid4().hex[:8]}"
    station = await open_station(charger_id)
    station.answer = "InvalidCertificate"
    desire(watcher, bridge, charger_id, NEW)
    reported = await twin.wait_reported(charger_id, refused, timeout=10)
    assert refused(reported)["status"] == "InvalidCertificate"
    assert refused(reported)["value"] == NEW
    assert "signing_certificate" not in station.updates[0]["firmware"]  # none in the catalog

    # Asked again by the operator: accepted this time; news of another request (an
    # operator's one-off update) do not count, a failure of ours does.
    station.answer = "Accepted"
    station.progress = ("Downloading",)
    desire(watcher, bridge, charger_id, NEW)
    await eventually(lambda: len(station.updates) == 2, timeout=10, what="a second update")
    request_id = station.updates[1]["requestId"]
    await twin.wait_reported(charger_id, lambda r: not refused(r))
    await station.status("DownloadFailed", request_id + 1)
    await station.status("Downloading", request_id)
    await station.status("InstallVerificationFailed", request_id)
    reported = await twin.wait_reported(charger_id, refused)
    assert refused(reported)["status"] == "InstallVerificationFailed"
    assert refused(reported)["reason"] == "reported by the station"

    # Not retried while desired stays as it was.
    await asyncio.sleep(0.5)
    assert len(station.updates) == 2


@pytest.mark.parametrize(
    ("answer", "refusal"),
    [
        ("Rejected", "Rejected"),
        ("RevokedCertificate", "RevokedCertificate"),
        ("AcceptedCanceled", None),  # accepted: an update under way was cancelled for it
    ],
)
async def test_the_answer_to_update_firmware_decides_whether_it_started(
    bridge: Bridge,
    open_station: OpenFirmwareStation,
    twin: RunningTwin,
    watcher: MqttWatcher,
    answer: str,
    refusal: str | None,
) -> None:
    await add_image(bridge)
    charger_id = f"fw-{uuid.uuid4().hex[:8]}"
    station = await open_station(charger_id)
    station.answer = answer
    desire(watcher, bridge, charger_id, NEW)
    if refusal is None:
        reported = await twin.wait_reported(
            charger_id, lambda r: (r.get("firmware") or {}).get("requested")
        )
        assert reported["firmware"]["requested"]["requestId"] == station.updates[0]["requestId"]
        assert not refused(reported)
    else:
        reported = await twin.wait_reported(charger_id, refused)
        assert refused(reported)["status"] == refusal
        assert refused(reported)["reason"] == "UpdateFirmware refused"
        assert "requested" not in (reported.get("firmware") or {})


async def test_installed_but_booted_on_the_old_version_is_a_failure_at_once(
    bridge: Bridge, open_station: OpenFirmwareStation, twin: RunningTwin, watcher: MqttWatcher
) -> None:
    await add_image(bridge)
    charger_id = f"fw-{uuid.uuid4().hex[:8]}"
    station = await open_station(charger_id)
    desire(watcher, bridge, charger_id, NEW)
    async with asyncio.timeout(10):
        await station.reported_all.wait()
    request_id = station.updates[0]["requestId"]
    await twin.wait_reported(
        charger_id, lambda r: (r.get("firmware") or {}).get("status") == "InstallRebooting"
    )
    await station.ws.close()

    # It rolled back: boots on the old version, then says Installed.
    rebooted = await open_station(charger_id, OLD)
    await rebooted.status("Installed", request_id)
    reported = await twin.wait_reported(charger_id, refused)
    assert refused(reported)["status"] == "InstalledButNotRunning"
    assert OLD in refused(reported)["reason"]
    await asyncio.sleep(0.3)
    assert rebooted.updates == []  # a failure is not retried until the operator asks again


async def test_a_boot_on_the_old_version_after_install_rebooting_is_a_failure(
    bridge: Bridge, open_station: OpenFirmwareStation, twin: RunningTwin, watcher: MqttWatcher
) -> None:
    """The station said it reboots to activate the image, then boots on the old one and
    says nothing more: a failure at that boot, not after the hour without news."""
    await add_image(bridge)
    charger_id = f"fw-{uuid.uuid4().hex[:8]}"
    station = await open_station(charger_id)
    desire(watcher, bridge, charger_id, NEW)
    async with asyncio.timeout(10):
        await station.reported_all.wait()
    await twin.wait_reported(
        charger_id, lambda r: (r.get("firmware") or {}).get("status") == "InstallRebooting"
    )
    await station.ws.close()

    rebooted = await open_station(charger_id, OLD)
    reported = await twin.wait_reported(charger_id, refused)
    assert refused(reported)["status"] == "InstalledButNotRunning"
    assert rebooted.updates == []


async def test_an_image_for_another_model_is_never_sent_to_a_station(
    bridge: Bridge, open_station: OpenFirmwareStation, twin: RunningTwin, watcher: MqttWatcher
) -> None:
    assert bridge.db is not None
    await FirmwareCatalog(bridge.db).add(
        vendor="VendorX", model="Other", version=NEW, sha256=SHA, size=10, source="upload"
    )
    charger_id = f"fw-{uuid.uuid4().hex[:8]}"
    station = await open_station(charger_id)
    desire(watcher, bridge, charger_id, NEW)
    reported = await twin.wait_reported(charger_id, refused)
    assert refused(reported)["status"] == "NotInCatalog"
    assert station.updates == []
