"""Firmware updates and log uploads as an OCPP 2.0.1 station performs them.

UpdateFirmware (part 2, L01): at ``retrieveDateTime`` the station downloads
``firmware.location`` and checks it the way the 1.6 simulator does (the download and the
``?sha256=`` / ``?version=`` URL conventions of :mod:`simulator.firmwares`); a
``signature`` in the request is reported as SignatureVerified (the simulator holds no
certificates to check it against). It reports each step with FirmwareStatusNotification
carrying the request's ``requestId``: Downloading, Downloaded, SignatureVerified,
Installing, InstallRebooting, then reboots, boots with ``reason`` FirmwareUpdate and the
new ``firmwareVersion`` and reports Installed; or DownloadFailed / InstallationFailed.

GetLog (part 2, N01): the log file of :func:`simulator.diagnostics.build_log`, uploaded
the same way (HTTP PUT, POST on 405, or FTP) to ``log.remoteLocation``, reported with
LogStatusNotification Uploading, then Uploaded or UploadFailure, with ``requestId``.

Both outlive the socket; a status that cannot be sent while offline is dropped.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime

from ocpp.v16.enums import Reason
from ocpp.v201 import call
from websockets.exceptions import ConnectionClosed

from simulator import diagnostics, firmwares
from simulator.connections import Offline
from simulator.devicemodels import Address
from simulator.states import FirmwareFailure
from simulator.stationstates import Station

__all__ = ["log_file_name", "report_installed", "update_firmware", "upload_log"]


async def update_firmware(
    station: Station,
    request_id: int,
    location: str,
    retrieve_at: str,
    *,
    signed: bool,
    retries: int | None,
    retry_interval: int | None,
) -> None:
    """Run one UpdateFirmware to its end; owned by the station, not the socket."""
    delay = (_parse_date(retrieve_at) - datetime.now(UTC)).total_seconds()
    if delay > 0:
        station.log.info("%s: firmware download in %.0f s", station.id, delay)
        await asyncio.sleep(delay)
    station.firmware_request_id = request_id
    attempts = 1 + max(0, retries or 0)
    image = b""
    for attempt in range(1, attempts + 1):
        await _firmware_status(station, "Downloading")
        try:
            image = await firmwares.download_image(station, location)
            break
        except firmwares.DownloadError as exc:
            station.log.warning(
                "%s: firmware download %d/%d failed: %s", station.id, attempt, attempts, exc
            )
            if attempt == attempts:
                await _firmware_status(station, "DownloadFailed")
                return
            await asyncio.sleep(5 if retry_interval is None else retry_interval)
    digest = hashlib.sha256(image).hexdigest()
    wanted = firmwares.expected_sha256(location)
    if station.fail_firmware is FirmwareFailure.CHECKSUM or (
        wanted is not None and wanted != digest
    ):
        station.log.warning("%s: firmware image sha256 %s is not %s", station.id, digest, wanted)
        await _firmware_status(station, "DownloadFailed")
        return
    await _firmware_status(station, "Downloaded")
    if signed:
        await _firmware_status(station, "SignatureVerified")
    await _firmware_status(station, "Installing")
    await asyncio.sleep(station.options.firmware_install_s)
    if station.fail_firmware is FirmwareFailure.INSTALL:
        station.log.warning("%s: firmware installation failed", station.id)
        await _firmware_status(station, "InstallationFailed")
        return
    version = firmwares.image_version(location)
    await _firmware_status(station, "InstallRebooting")
    station.log.info(
        "%s: firmware %s installed (was %s)", station.id, version, station.firmware_version
    )
    station.firmware_version = version
    station.device_model.update(Address("ChargingStation", "FirmwareVersion"), version)
    station.installed_request_id = request_id
    station.boot_reason = "FirmwareUpdate"
    station.reboot(Reason.reboot)


async def report_installed(station: Station) -> None:
    """After the boot that follows an installation: Installed for its request."""
    request_id, station.installed_request_id = station.installed_request_id, None
    if request_id is not None:
        station.firmware_request_id = request_id
        await _firmware_status(station, "Installed")
        station.firmware_state = "Idle"


def log_file_name(station: Station) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{station.id}-log-{stamp}.log"


async def upload_log(
    station: Station,
    request_id: int,
    location: str,
    file_name: str,
    retries: int | None,
    retry_interval: int | None,
) -> None:
    """Upload the log, retrying ``retries`` times ``retry_interval`` seconds apart."""
    station.log_request_id = request_id
    await _log_status(station, "Uploading")
    body = diagnostics.build_log(station)
    attempts = 1 + max(0, retries or 0)
    for attempt in range(1, attempts + 1):
        try:
            await diagnostics.upload_file(location, file_name, body)
        except diagnostics.UPLOAD_ERRORS as exc:
            station.log.warning(
                "%s: log upload %d/%d failed: %s", station.id, attempt, attempts, exc
            )
            if attempt < attempts:
                await asyncio.sleep(5 if retry_interval is None else retry_interval)
            continue
        station.log.info("%s: log %s uploaded", station.id, file_name)
        await _log_status(station, "Uploaded")
        break
    else:
        await _log_status(station, "UploadFailure")
    station.log_status = "Idle"


async def _firmware_status(station: Station, status: str) -> None:
    """FirmwareStatusNotification (part 2, L01.FR.01) with the request's id."""
    station.firmware_state = status
    try:
        await station.call(
            call.FirmwareStatusNotification(status=status, request_id=station.firmware_request_id)
        )
    except (ConnectionClosed, Offline, TimeoutError) as exc:
        station.log.info("%s: firmware status %s not sent: %r", station.id, status, exc)


async def _log_status(station: Station, status: str) -> None:
    """LogStatusNotification (part 2, N01.FR.07) with the request's id."""
    station.log_status = status
    try:
        await station.call(
            call.LogStatusNotification(status=status, request_id=station.log_request_id)
        )
    except (ConnectionClosed, Offline, TimeoutError) as exc:
        station.log.info("%s: log status %s not sent: %r", station.id, status, exc)


def _parse_date(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
