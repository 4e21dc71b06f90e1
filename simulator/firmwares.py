"""Firmware updates as a charger performs them (OCPP 1.6 sections 5.19 and 4.5).

At ``retrieveDate`` the charger downloads the image from ``location`` with httpx, checks
it, installs it, reports each step with FirmwareStatusNotification (Downloading,
Downloaded, Installing, Installed, or DownloadFailed / InstallationFailed), then reboots and
boots again with the new firmwareVersion.

URL conventions (1.6 has no field for either, so the central system puts them in the URL):

- ``?sha256=<64 hex digits>``: the SHA-256 of the image. A mismatch is DownloadFailed
  (1.6 has no InvalidChecksum status; that arrives with the security extension's
  SignedFirmwareStatusNotification).
- ``?version=<text>``: the firmware version the image installs. Without it, the version is
  the file name without its extension (``.../CT-AC22_1.5.0.bin`` gives ``CT-AC22_1.5.0``).

The update outlives the socket (a real charger keeps downloading while offline); a status
that cannot be sent because the charger is offline is dropped.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime
from pathlib import PurePosixPath
from urllib.parse import parse_qs, urlsplit

import httpx
from ocpp.v16 import call
from ocpp.v16.enums import FirmwareStatus, Reason
from websockets.exceptions import ConnectionClosed

from simulator.connections import Offline
from simulator.states import Charger, FirmwareFailure
from simulator.web_clients import web_client

__all__ = ["DownloadError", "download_image", "expected_sha256", "image_version", "update_firmware"]

EXTENSIONS = (".tar.gz", ".bin", ".img", ".zip", ".fw", ".hex", ".tgz")
MAX_IMAGE_BYTES = 64 * 1024 * 1024


class DownloadError(Exception):
    """The image could not be fetched (network error, HTTP error, size limit)."""


def expected_sha256(location: str) -> str | None:
    """The ``sha256`` query parameter of ``location``, lower-cased, if any."""
    values = parse_qs(urlsplit(location).query).get("sha256")
    return values[0].strip().lower() if values else None


def image_version(location: str) -> str:
    """The version an image installs: ``?version=`` or the file name without extension."""
    parts = urlsplit(location)
    values = parse_qs(parts.query).get("version")
    if values and values[0].strip():
        return values[0].strip()
    name = PurePosixPath(parts.path).name
    for ext in EXTENSIONS:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name or "unknown"


def _parse_date(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def update_firmware(
    charger: Charger,
    location: str,
    retrieve_date: str,
    retries: int | None,
    retry_interval: int | None,
) -> None:
    """Run one UpdateFirmware.req to its end; owned by the charger, not the socket."""
    delay = (_parse_date(retrieve_date) - datetime.now(UTC)).total_seconds()
    if delay > 0:
        charger.log.info("%s: firmware download in %.0f s", charger.id, delay)
        await asyncio.sleep(delay)
    attempts = 1 + max(0, retries or 0)
    image = b""
    for attempt in range(1, attempts + 1):
        await _report(charger, FirmwareStatus.downloading)
        try:
            image = await download_image(charger, location)
            break
        except DownloadError as exc:
            charger.log.warning(
                "%s: firmware download %d/%d failed: %s", charger.id, attempt, attempts, exc
            )
            if attempt == attempts:
                await _report(charger, FirmwareStatus.download_failed)
                return
            await asyncio.sleep(5 if retry_interval is None else retry_interval)
    digest = hashlib.sha256(image).hexdigest()
    if charger.fail_firmware is FirmwareFailure.CHECKSUM:
        digest = hashlib.sha256(image + b"\x00corrupted").hexdigest()
    wanted = expected_sha256(location)
    corrupted = charger.fail_firmware is FirmwareFailure.CHECKSUM
    if corrupted or (wanted is not None and wanted != digest):
        charger.log.warning(
            "%s: firmware image sha256 %s does not match %s", charger.id, digest, wanted
        )
        await _report(charger, FirmwareStatus.download_failed)
        return
    await _report(charger, FirmwareStatus.downloaded)
    await _report(charger, FirmwareStatus.installing)
    await asyncio.sleep(charger.options.firmware_install_s)
    if charger.fail_firmware is FirmwareFailure.INSTALL:
        charger.log.warning("%s: firmware installation failed", charger.id)
        await _report(charger, FirmwareStatus.installation_failed)
        return
    version = image_version(location)
    charger.log.info(
        "%s: firmware %s installed (was %s)", charger.id, version, charger.firmware_version
    )
    charger.firmware_version = version
    await _report(charger, FirmwareStatus.installed)
    charger.firmware_status = FirmwareStatus.idle
    charger.reboot(Reason.reboot)


async def download_image(charger: Charger, location: str) -> bytes:
    """The image at ``location`` (http or https), or DownloadError; a charger whose
    ``fail_firmware`` is DOWNLOAD loses the transfer."""
    if charger.fail_firmware is FirmwareFailure.DOWNLOAD:
        await asyncio.sleep(0.2)
        raise DownloadError("connection reset by peer (simulated)")
    scheme = urlsplit(location).scheme
    if scheme not in ("http", "https"):
        raise DownloadError(f"unsupported scheme {scheme!r} (only http and https)")
    try:
        async with (
            web_client() as client,
            client.stream("GET", location) as response,
        ):
            if response.status_code != 200:
                raise DownloadError(f"HTTP {response.status_code}")
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_IMAGE_BYTES:
                    raise DownloadError(f"image larger than {MAX_IMAGE_BYTES} bytes")
                chunks.append(chunk)
            return b"".join(chunks)
    except httpx.HTTPError as exc:
        raise DownloadError(f"{type(exc).__name__}: {exc}") from exc


async def _report(charger: Charger, status: FirmwareStatus) -> None:
    """FirmwareStatusNotification.req (section 4.5); dropped while offline."""
    charger.firmware_status = status
    try:
        await charger.call(call.FirmwareStatusNotification(status=status))
    except (ConnectionClosed, Offline, TimeoutError) as exc:
        charger.log.info("%s: firmware status %s not sent: %r", charger.id, status, exc)
