"""Desired firmware for an OCPP 2.0.1 station: UpdateFirmware (L01), progress by ``requestId``.

The rules of :mod:`bridge.firmwares` hold unchanged (the catalog looked up by the booted
vendor and model, never an image that does not fit, not asked again while in progress, a
failure recorded in ``reported.refused.firmware`` and not retried until the operator asks
again, ``InstalledButNotRunning``); what differs for 2.0.1:

- One call, UpdateFirmware with ``requestId`` and ``firmware {location, retrieveDateTime,
  signingCertificate?, signature?}`` (the certificate and signature from the catalog when
  it has both). Its answer: Accepted (and AcceptedCanceled: an update under way was
  cancelled for this one) starts the update; Rejected, InvalidCertificate and
  RevokedCertificate are refusals.
- FirmwareStatusNotification carries the ``requestId`` of the request it is about: only
  news of *our* request (this connection's, or the one in ``reported.firmware.requested``
  from an earlier connection) counts, so an operator's one-off update never becomes a
  refusal of the desired version. Failures: DownloadFailed, InvalidSignature,
  InstallationFailed, InstallVerificationFailed (and the 1.6 ones).
- A station reboots *before* it reports ``Installed`` (InstallRebooting, then a boot, then
  Installed: OCPP 2.0.1 use case L01, "Secure Firmware Update"): Installed
  after a boot on this connection that followed the request, with the booted
  ``firmwareVersion`` not the requested one, is ``InstalledButNotRunning`` at once;
  Installed before any boot waits for the boot, as for 1.6. A boot on another version after
  InstallRebooting (the station said it reboots to activate the image) is
  ``InstalledButNotRunning`` too, without waiting for a notification that may never come.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass
from typing import Any

from bridge.errors import CallErrorReceived, InvalidCallError, InvalidResponseError
from bridge.firmwares import FAILED, IN_PROGRESS, FirmwareReconciler
from bridge.times import iso_time, now
from chargetwin.database import DatabaseError
from twin.catalog import FirmwareImage

log = logging.getLogger(__name__)

ACTION = "UpdateFirmware"
# UpdateFirmwareStatusEnumType values that start the update.
STARTED = frozenset({"Accepted", "AcceptedCanceled"})
# FirmwareStatusEnumType values of an update under way (beside the 1.6 ones).
IN_PROGRESS_201 = IN_PROGRESS | {
    "DownloadScheduled",
    "DownloadPaused",
    "SignatureVerified",
    "InstallScheduled",
    "InstallRebooting",
}


@dataclass(frozen=True, slots=True)
class _Request:
    """An UpdateFirmware the station accepted: what its notifications are about."""

    request_id: int
    version: str
    at: float


class StationFirmware(FirmwareReconciler):
    """:class:`~bridge.firmwares.FirmwareReconciler` with the 2.0.1 call and notifications."""

    in_progress = IN_PROGRESS_201
    # InstallRebooting: "about to reboot to activate new firmware" (FirmwareStatusEnumType).
    boots_into = frozenset({"Installed", "InstallRebooting"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._request_sent: _Request | None = None
        # Notifications are handled one at a time, in the order they came.
        self._news = asyncio.Lock()

    # --- notifications ---------------------------------------------------------------------
    async def progress(self, status: str, request_id: int | None) -> None:
        """A FirmwareStatusNotification: a failure of our request becomes a refusal."""
        async with self._news:
            if request_id is None:
                return  # Idle: about no request
            request = await self._request_of(request_id)
            if request is None:
                log.info(
                    "%s: firmware %s for request %s, not the desired version's",
                    self.charger_id,
                    status,
                    request_id,
                )
                return
            if status == "Installed":
                self._on_installed(request)
            elif status in FAILED:
                self._refuse(request.version, status, "reported by the station")

    def _on_installed(self, request: _Request) -> None:
        booted = self._charge_point
        if booted is not None and self._booted_at > request.at:
            running = booted.get("firmwareVersion")
            if running != request.version:
                self._not_running(request.version, running)
            return
        self._installed = request.version  # checked at the boot that follows

    async def _request_of(self, request_id: int) -> _Request | None:
        """Our request with this id: this connection's, else the shadow's ``requested``."""
        sent = self._request_sent
        if sent is not None and sent.request_id == request_id:
            return sent
        try:
            document = await self._support.shadows.get_document(self.charger_id)
        except DatabaseError as exc:
            log.warning("%s: shadow unreadable (%s); firmware news ignored", self.charger_id, exc)
            return None
        reported = ((document or {}).get("state") or {}).get("reported") or {}
        requested = (reported.get("firmware") or {}).get("requested") or {}
        if requested.get("requestId") != request_id or not requested.get("version"):
            return None
        return _Request(request_id, str(requested["version"]), float(requested.get("at") or 0))

    # --- the request -----------------------------------------------------------------------
    async def _send(self, image: FirmwareImage) -> None:
        request_id = secrets.randbelow(2**31 - 2) + 1
        firmware: dict[str, Any] = {
            "location": image.location(self._support.public_url),
            "retrieveDateTime": iso_time(),
        }
        if image.signed:
            firmware["signingCertificate"] = image.signing_certificate
            firmware["signature"] = image.signature
        payload = {
            "requestId": request_id,
            "retries": self._support.retries,
            "retryInterval": self._support.retry_interval,
            "firmware": firmware,
        }
        try:
            answer = await self._request(ACTION, payload)
        except InvalidCallError as exc:
            self._refuse(image.version, "Invalid", str(exc))
            return
        except CallErrorReceived as exc:
            self._refuse(image.version, "CallError", exc.error_code)
            return
        except InvalidResponseError as exc:
            self._refuse(image.version, "InvalidResponse", str(exc))
            return
        self.sent.append(ACTION)
        status = str(answer.get("status"))
        if status not in STARTED:
            info = answer.get("statusInfo") or {}
            reason = info.get("reasonCode") if isinstance(info, dict) else None
            why = f"{ACTION} refused" + (f": {reason}" if reason else "")
            self._refuse(image.version, status, why)
            return
        at = now()
        self._request_sent = _Request(request_id, image.version, at)
        log.info(
            "%s: %s %s sent (request %d, %s)",
            self.charger_id,
            ACTION,
            image.version,
            request_id,
            image.sha256[:12],
        )
        self._reporter.report(
            self.charger_id,
            {
                "firmware": {
                    "requested": {
                        "version": image.version,
                        "sha256": image.sha256,
                        "imageId": image.image_id,
                        "via": ACTION,
                        "requestId": request_id,
                        "at": at,
                    }
                },
                "refused": {"firmware": None},
            },
            at,
        )
