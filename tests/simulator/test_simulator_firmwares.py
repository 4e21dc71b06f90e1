"""UpdateFirmware (OCPP 1.6 sections 5.19, 4.5) and GetDiagnostics (5.9, 4.4) over real HTTP."""

from __future__ import annotations

import hashlib
import ssl
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from ocpp.v16 import call
from simulator_helpers import CentralSystem, HttpServer, fast_options, running

from simulator import FirmwareFailure
from simulator.firmwares import expected_sha256, image_version

IMAGE = b"\x7fFIRMWARE" + bytes(range(256)) * 64
SHA = hashlib.sha256(IMAGE).hexdigest()


def test_url_conventions() -> None:
    url = f"http://h/fw/ct.bin?sha256={SHA.upper()}&version=2.0.0"
    assert expected_sha256(url) == SHA
    assert image_version(url) == "2.0.0"
    assert image_version("http://h/fw/CT-AC22_1.5.0.bin") == "CT-AC22_1.5.0"
    assert expected_sha256("http://h/fw/a.bin") is None


def statuses(central: CentralSystem, cid: str) -> list[str]:
    return [m["status"] for m in central.messages(cid, "FirmwareStatusNotification")]


async def test_update_installs_reboots_and_boots_with_new_version(
    central: CentralSystem, http_server: HttpServer
) -> None:
    http_server.files["/fw/image.bin"] = IMAGE
    location = http_server.url(f"/fw/image.bin?sha256={SHA}&version=9.9.9")
    async with running(fast_options(central.url)) as fleet:
        charger = fleet.chargers[0]
        cid = charger.id
        await fleet.wait_for(booted=1, timeout=5)
        await central.call(
            cid,
            call.UpdateFirmware(location=location, retrieve_date=datetime.now(UTC).isoformat()),
        )
        await central.wait(lambda: len(central.messages(cid, "BootNotification")) == 2)
        assert statuses(central, cid) == ["Downloading", "Downloaded", "Installing", "Installed"]
        assert central.messages(cid, "BootNotification")[1]["firmwareVersion"] == "9.9.9"
        assert central.connections[cid] == 2
        assert charger.firmware_version == "9.9.9"
        await fleet.wait_for(booted=1, timeout=5)
        # Triggered afterwards, the charger is Idle again (section 4.5).
        await central.call(cid, call.TriggerMessage(requested_message="FirmwareStatusNotification"))
        await central.wait(lambda: statuses(central, cid)[-1] == "Idle")


@pytest.mark.parametrize(
    ("failure", "sha", "expected"),
    [
        (FirmwareFailure.DOWNLOAD, SHA, ["Downloading", "DownloadFailed"]),
        (FirmwareFailure.CHECKSUM, SHA, ["Downloading", "DownloadFailed"]),
        (None, "0" * 64, ["Downloading", "DownloadFailed"]),
        (
            FirmwareFailure.INSTALL,
            SHA,
            ["Downloading", "Downloaded", "Installing", "InstallationFailed"],
        ),
    ],
)
async def test_failed_update_keeps_the_old_version(
    central: CentralSystem,
    http_server: HttpServer,
    failure: FirmwareFailure | None,
    sha: str,
    expected: list[str],
) -> None:
    http_server.files["/fw/image.bin"] = IMAGE
    location = http_server.url(f"/fw/image.bin?sha256={sha}&version=9.9.9")
    async with running(fast_options(central.url)) as fleet:
        charger = fleet.chargers[0]
        charger.fail_firmware = failure
        cid = charger.id
        old = charger.firmware_version
        await fleet.wait_for(booted=1, timeout=5)
        await central.call(
            cid, call.UpdateFirmware(location=location, retrieve_date="2020-01-01T00:00:00Z")
        )
        await central.wait(lambda: statuses(central, cid)[-1:] == [expected[-1]])
        assert statuses(central, cid) == expected
        assert charger.firmware_version == old
        assert central.connections[cid] == 1


async def test_missing_image_is_retried_then_download_failed(
    central: CentralSystem, http_server: HttpServer
) -> None:
    async with running(fast_options(central.url)) as fleet:
        cid = fleet.chargers[0].id
        await fleet.wait_for(booted=1, timeout=5)
        await central.call(
            cid,
            call.UpdateFirmware(
                location=http_server.url("/fw/missing.bin"),
                retrieve_date="2020-01-01T00:00:00Z",
                retries=1,
                retry_interval=0,
            ),
        )
        await central.wait(lambda: statuses(central, cid)[-1:] == ["DownloadFailed"])
        assert statuses(central, cid) == ["Downloading", "Downloading", "DownloadFailed"]


@pytest.mark.parametrize(("http_status", "expected"), [(200, "Uploaded"), (500, "UploadFailed")])
async def test_get_diagnostics_uploads_a_log(
    central: CentralSystem, http_server: HttpServer, http_status: int, expected: str
) -> None:
    http_server.upload_status = http_status
    async with running(fast_options(central.url)) as fleet:
        cid = fleet.chargers[0].id
        await fleet.wait_for(booted=1, timeout=5)
        answer = await central.call(cid, call.GetDiagnostics(location=http_server.url("/up/")))
        assert answer.file_name.startswith(cid) and answer.file_name.endswith(".log")
        await central.wait(
            lambda: (
                [m["status"] for m in central.messages(cid, "DiagnosticsStatusNotification")]
                == ["Uploading", expected]
            )
        )
        method, path, body = http_server.uploads[0]
        assert (method, path) == ("PUT", f"/up/{answer.file_name}")
        assert f"charger={cid}".encode() in body
        assert b"config HeartbeatInterval=" in body


async def test_transfers_share_one_tls_context(
    http_server: HttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Building a TLS context loads a CA bundle (most of the simulator's CPU in a campaign
    when every download built one): downloads and uploads build one per process."""
    from simulator import web_clients
    from simulator.diagnostics import upload_file
    from simulator.firmwares import download_image

    built: list[object] = []
    real = ssl.create_default_context

    def counting(*args: object, **kwargs: object) -> ssl.SSLContext:
        built.append(args)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ssl, "create_default_context", counting)
    web_clients._tls_context.cache_clear()
    http_server.files["/fw/image.bin"] = IMAGE
    charger = SimpleNamespace(fail_firmware=None)
    for _ in range(5):
        image = await download_image(charger, http_server.url("/fw/image.bin"))  # type: ignore[arg-type]
        assert image == IMAGE
        await upload_file(http_server.url("/up/"), "log.txt", b"log")
    assert len(http_server.uploads) == 5
    assert len(built) == 1
