"""Firmware reconciliation: ``desired.firmware.version`` -> UpdateFirmware from the catalog.

One :class:`FirmwareReconciler` per connection, driven by :class:`~bridge.reconcilers.Reconciler`
(deltas, boots) and by the charger's FirmwareStatusNotifications. The rules:

- Nothing is sent before the charger booted on this connection: the image must fit the
  vendor and model of *its* BootNotification (the catalog is looked up by them; a version
  the catalog lacks for that vendor/model is refused as ``NotInCatalog``, never sent).
- The charger already runs the desired version (its boot said so): nothing to do.
- An update of the same version already asked for is not asked again while it is in
  progress (Downloading, Downloaded, Installing, Installed; OCPP 1.6 section 4.5), also
  across reconnects (the shadow's ``reported.firmware.requested`` and ``status``), unless
  the progress went stale (:data:`STALE_PROGRESS_S` without news).
- A failure (DownloadFailed, InstallationFailed, a refused SignedUpdateFirmware, a
  CALLERROR) is recorded in ``reported.refused.firmware`` ``{value, status, at, reason?}``
  and not retried, until the operator asks again: a new desired version, or the same one
  written again (``PATCH .../shadow/desired`` with the same ``firmware.version`` gives the
  desired leaf a newer timestamp than the refusal's ``at``).
- ``Installed`` and then a boot on another version than the one installed (OCPP 1.6
  section 4.5: after Installed the charger reboots into the new image; a boot on the old
  one means the image did not take, e.g. the charger rolled back) is a failed
  installation at once: ``InstalledButNotRunning`` in ``reported.refused.firmware``, so a
  campaign counts the failure with its reason instead of waiting for its timeout.
- With a signing certificate and signature in the catalog, SignedUpdateFirmware (1.6
  security extension, whitepaper edition 2, section 4.3 of the firmware use cases) is
  tried first; a charger that answers NotImplemented / NotSupported gets UpdateFirmware.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bridge.errors import CallErrorReceived, InvalidCallError, InvalidResponseError
from bridge.reports import Reporter
from bridge.times import iso_time, now
from chargetwin.database import DatabaseError
from twin.catalog import FirmwareCatalog, FirmwareImage
from twin.stores import ShadowStore

log = logging.getLogger(__name__)

Request = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]

IN_PROGRESS = frozenset({"Downloading", "Downloaded", "Installing", "Installed"})
FAILED = frozenset(
    {
        "DownloadFailed",
        "InstallationFailed",
        # SignedFirmwareStatusNotification (1.6 security extension)
        "InvalidSignature",
        "SignatureVerified_Failed",
        "InstallVerificationFailed",
        "InvalidCertificate",
        "RevokedCertificate",
    }
)
INSTALLED_BUT_NOT_RUNNING = "InstalledButNotRunning"
FALLBACK_ERRORS = frozenset({"NotImplemented", "NotSupported"})
# In-progress news older than this no longer stops a new request (the charger lost the job).
STALE_PROGRESS_S = 3600.0


@dataclass(frozen=True, slots=True)
class FirmwareSupport:
    """What firmware reconciliation needs from the process (shared by all connections)."""

    catalog: FirmwareCatalog
    shadows: ShadowStore
    public_url: str
    retries: int = 3
    retry_interval: int = 60


@dataclass(frozen=True, slots=True)
class _Attempt:
    version: str
    asked_at: float  # the desired leaf's timestamp when we acted on it


class FirmwareReconciler:
    """Drives one connection's charger toward its desired firmware version."""

    def __init__(
        self, charger_id: str, request: Request, reporter: Reporter, support: FirmwareSupport
    ) -> None:
        self.charger_id = charger_id
        self._request = request
        self._reporter = reporter
        self._support = support
        self._charge_point: Mapping[str, Any] | None = None
        self._booted_at = 0.0
        # The version this connection's charger said it had Installed, waiting for its boot.
        self._installed: str | None = None
        self._attempt: _Attempt | None = None
        self._desired: str | None = None
        # The last firmware request on this connection was an operator's one-off command:
        # its news belong to the command, not to desired state (no refusal from them).
        self._one_off = False
        self.sent: list[str] = []  # actions sent on this connection (for tests and logs)

    # Statuses of an update under way, not asked again while fresh (OCPP 2.0.1 adds some).
    in_progress: frozenset[str] = IN_PROGRESS
    # Statuses after which the next boot must report the new version.
    boots_into: frozenset[str] = frozenset({"Installed"})

    # --- inputs --------------------------------------------------------------------------
    def booted(self, charge_point: Mapping[str, Any]) -> None:
        """The BootNotification's fields (``vendor``, ``model``, ``firmwareVersion``)."""
        self._charge_point = dict(charge_point)
        self._booted_at = now()
        installed, self._installed = self._installed, None
        running = charge_point.get("firmwareVersion")
        if installed is not None and running != installed:
            # Installed on this connection, then rebooted without closing the socket.
            self._not_running(installed, running)

    def one_off(self) -> None:
        """An ``update-firmware`` / ``signed-update-firmware`` command was sent."""
        self._one_off = True
        self._attempt = None
        self._installed = None

    def status(self, status: str) -> None:
        """A (Signed)FirmwareStatusNotification; a failure becomes a refusal."""
        if self._one_off:
            return
        if status == "Installed":
            self._installed = self._attempt.version if self._attempt else self._desired
            return
        if status not in FAILED:
            return
        version = self._attempt.version if self._attempt else self._desired
        if version is None:
            log.warning("%s: firmware %s for no known request", self.charger_id, status)
            return
        self._refuse(version, status, "reported by the charger")

    # --- reconciliation ------------------------------------------------------------------
    async def reconcile(self, version: str, asked_at: float) -> None:
        """Act on ``desired.firmware.version`` (written at ``asked_at``) if anything is due."""
        self._desired = version
        charge_point = self._charge_point
        if charge_point is None:
            return  # not booted on this connection: vendor and model unknown yet
        if charge_point.get("firmwareVersion") == version:
            return
        attempt = self._attempt
        if attempt is not None and attempt.version == version and attempt.asked_at >= asked_at:
            return
        self._attempt = _Attempt(version, asked_at)
        self._one_off = False
        if await self._settled_before(version, asked_at):
            return
        vendor, model = str(charge_point.get("vendor")), str(charge_point.get("model"))
        image = await self._support.catalog.find(vendor, model, version)
        if image is None:
            self._refuse(
                version,
                "NotInCatalog",
                f"the catalog has no firmware {version} for {vendor} {model}",
            )
            return
        await self._send(image)

    async def _settled_before(self, version: str, asked_at: float) -> bool:
        """What earlier connections left in the shadow: a refusal, or an update under way."""
        try:
            document = await self._support.shadows.get_document(self.charger_id)
        except DatabaseError as exc:
            log.warning(
                "%s: shadow unreadable (%s); firmware decided without it", self.charger_id, exc
            )
            return False
        reported = ((document or {}).get("state") or {}).get("reported") or {}
        refusal = (reported.get("refused") or {}).get("firmware") or {}
        if refusal.get("value") == version and float(refusal.get("at") or 0) >= asked_at:
            log.info(
                "%s: firmware %s was refused (%s); not retried until asked again",
                self.charger_id,
                version,
                refusal.get("status"),
            )
            return True
        firmware = reported.get("firmware") or {}
        requested = firmware.get("requested") or {}
        updated_at = float(firmware.get("updatedAt") or 0)
        ours = requested.get("version") == version and float(requested.get("at") or 0) >= asked_at
        if ours and firmware.get("status") in self.boots_into and updated_at < self._booted_at:
            # Installed (about to run) before this connection's boot, which reports another
            # version.
            self._not_running(version, (self._charge_point or {}).get("firmwareVersion"))
            return True
        fresh = updated_at > now() - STALE_PROGRESS_S
        if ours and firmware.get("status") in self.in_progress and fresh:
            log.info(
                "%s: firmware %s already %s; not asked again",
                self.charger_id,
                version,
                firmware.get("status"),
            )
            return True
        return False

    async def _send(self, image: FirmwareImage) -> None:
        support = self._support
        location = image.location(support.public_url)
        action = "UpdateFirmware"
        try:
            if image.signed:
                try:
                    action = "SignedUpdateFirmware"
                    answer = await self._request(action, self._signed_payload(image, location))
                except CallErrorReceived as exc:
                    if exc.error_code not in FALLBACK_ERRORS:
                        raise
                    log.info(
                        "%s: SignedUpdateFirmware not supported (%s); UpdateFirmware instead",
                        self.charger_id,
                        exc.error_code,
                    )
                    action = "UpdateFirmware"
                    answer = await self._request(action, self._payload(location))
            else:
                answer = await self._request(action, self._payload(location))
        except InvalidCallError as exc:
            self._refuse(image.version, "Invalid", str(exc))
            return
        except CallErrorReceived as exc:
            self._refuse(image.version, "CallError", exc.error_code)
            return
        except InvalidResponseError as exc:
            self._refuse(image.version, "InvalidResponse", str(exc))
            return
        self.sent.append(action)
        status = answer.get("status")
        if action == "SignedUpdateFirmware" and status != "Accepted":
            # UpdateFirmwareStatusEnumType: Rejected, AcceptedCanceled, InvalidCertificate,
            # RevokedCertificate; only Accepted starts the update.
            self._refuse(image.version, str(status), "SignedUpdateFirmware refused")
            return
        at = now()
        log.info("%s: %s %s sent (%s)", self.charger_id, action, image.version, image.sha256[:12])
        self._reporter.report(
            self.charger_id,
            {
                "firmware": {
                    "requested": {
                        "version": image.version,
                        "sha256": image.sha256,
                        "imageId": image.image_id,
                        "via": action,
                        "at": at,
                    }
                },
                "refused": {"firmware": None},
            },
            at,
        )

    def _payload(self, location: str) -> dict[str, Any]:
        return {
            "location": location,
            "retrieveDate": iso_time(),
            "retries": self._support.retries,
            "retryInterval": self._support.retry_interval,
        }

    def _signed_payload(self, image: FirmwareImage, location: str) -> dict[str, Any]:
        return {
            "requestId": random.randrange(1, 2**31 - 1),
            "retries": self._support.retries,
            "retryInterval": self._support.retry_interval,
            "firmware": {
                "location": location,
                "retrieveDateTime": iso_time(),
                "signingCertificate": image.signing_certificate,
                "signature": image.signature,
            },
        }

    def _not_running(self, version: str, running: object) -> None:
        self._refuse(
            version,
            INSTALLED_BUT_NOT_RUNNING,
            f"installed, but the charger booted on {running or 'an unreported version'}",
        )

    def _refuse(self, version: str, status: str, reason: str | None) -> None:
        at = now()
        log.warning(
            "%s: firmware %s refused: %s%s",
            self.charger_id,
            version,
            status,
            f" ({reason})" if reason else "",
        )
        refusal: dict[str, Any] = {"value": version, "status": status, "at": at}
        if reason:
            refusal["reason"] = reason
        self._reporter.report(self.charger_id, {"refused": {"firmware": refusal}}, at)
