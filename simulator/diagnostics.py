"""GetDiagnostics (OCPP 1.6 section 5.9): build a small log file and upload it over HTTP.

The charger answers at once with the file name, then uploads in the background and reports
DiagnosticsStatusNotification (section 4.4) Uploading, then Uploaded or UploadFailed.

Upload convention: an HTTP PUT of the file body (text/plain) to ``location``, with the file
name appended when ``location`` ends with ``/``; a server that answers 405 gets the same
file as an HTTP POST of multipart/form-data (field ``file``), the other common habit of
chargers. An ``ftp://user:password@host:port/dir/`` location, usual in the field, gets the
file by FTP (passive mode, STOR into ``dir``) with the standard library's ``ftplib``.
"""

from __future__ import annotations

import asyncio
import ftplib
import io
from datetime import UTC, datetime
from urllib.parse import unquote, urlsplit

import httpx
from ocpp.v16 import call
from ocpp.v16.enums import DiagnosticsStatus
from websockets.exceptions import ConnectionClosed

from simulator.connections import Offline
from simulator.states import Charger
from simulator.web_clients import web_client

__all__ = [
    "UPLOAD_ERRORS",
    "build_log",
    "diagnostics_file_name",
    "upload_diagnostics",
    "upload_file",
]

# What a failed upload raises (network, HTTP status, FTP, a location it cannot use).
UPLOAD_ERRORS = (httpx.HTTPError, ftplib.Error, OSError, ValueError)


def diagnostics_file_name(charger: Charger) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{charger.id}-diagnostics-{stamp}.log"


def build_log(charger: Charger) -> bytes:
    """A short, plausible diagnostics file: identity, configuration, connectors, calls."""
    lines = [
        f"charger={charger.id} vendor={charger.model.vendor} model={charger.model.model}",
        f"serial={charger.serial_number} firmware={charger.firmware_version}",
        f"generated={datetime.now(UTC).isoformat()}",
        f"connects={charger.connects} boots={charger.boots} errors={charger.errors}",
        f"sessions_started={charger.sessions_started} "
        f"sessions_completed={charger.sessions_completed}",
    ]
    for connector in charger.connectors:
        lines.append(
            f"connector {connector.id}: status={connector.status} "
            f"error={connector.error_code} energy_wh={connector.meter.register_wh} "
            f"transaction={connector.transaction_id}"
        )
    entries, _ = charger.config.read(None)
    lines.extend(f"config {entry['key']}={entry['value']}" for entry in entries)
    lines.extend(f"received {action}" for action, _ in charger.received)
    return ("\n".join(lines) + "\n").encode()


async def upload_diagnostics(
    charger: Charger,
    location: str,
    file_name: str,
    retries: int | None,
    retry_interval: int | None,
) -> None:
    """Upload, retrying ``retries`` times ``retry_interval`` seconds apart (section 5.9)."""
    await _report(charger, DiagnosticsStatus.uploading)
    body = build_log(charger)
    attempts = 1 + max(0, retries or 0)
    for attempt in range(1, attempts + 1):
        try:
            await upload_file(location, file_name, body)
        except UPLOAD_ERRORS as exc:
            charger.log.warning(
                "%s: diagnostics upload %d/%d failed: %s", charger.id, attempt, attempts, exc
            )
            if attempt < attempts:
                await asyncio.sleep(5 if retry_interval is None else retry_interval)
            continue
        charger.log.info("%s: diagnostics %s uploaded", charger.id, file_name)
        await _report(charger, DiagnosticsStatus.uploaded)
        break
    else:
        await _report(charger, DiagnosticsStatus.upload_failed)
    charger.diagnostics_status = DiagnosticsStatus.idle


async def upload_file(location: str, file_name: str, body: bytes) -> None:
    """Upload ``body`` as ``file_name`` to an http(s) or ftp ``location`` (module doc)."""
    scheme = urlsplit(location).scheme
    if scheme == "ftp":
        await asyncio.to_thread(_ftp_upload, location, file_name, body)
        return
    if scheme not in ("http", "https"):
        raise ValueError(f"unsupported upload scheme {scheme!r} (http, https or ftp)")
    url = location + file_name if location.endswith("/") else location
    async with web_client() as client:
        response = await client.put(url, content=body, headers={"Content-Type": "text/plain"})
        if response.status_code == 405:
            response = await client.post(url, files={"file": (file_name, body, "text/plain")})
        response.raise_for_status()


def _ftp_upload(location: str, file_name: str, body: bytes) -> None:
    parts = urlsplit(location)
    with ftplib.FTP() as client:
        client.connect(parts.hostname or "", parts.port or 21, timeout=30)
        client.login(unquote(parts.username or "anonymous"), unquote(parts.password or ""))
        folder = parts.path.strip("/")
        if folder:
            client.cwd(folder)
        client.storbinary(f"STOR {file_name}", io.BytesIO(body))


async def _report(charger: Charger, status: DiagnosticsStatus) -> None:
    """DiagnosticsStatusNotification.req (section 4.4); dropped while offline."""
    charger.diagnostics_status = status
    try:
        await charger.call(call.DiagnosticsStatusNotification(status=status))
    except (ConnectionClosed, Offline, TimeoutError) as exc:
        charger.log.info("%s: diagnostics status %s not sent: %r", charger.id, status, exc)
