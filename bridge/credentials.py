"""Password rotations carried to the chargers: ChangeConfiguration AuthorizationKey.

The API records a rotation in the registry (:mod:`twin.registry`: the new password's hash,
and the password itself until the rotation ends) and publishes a ``rotate-credentials``
request on the charger's command topic, which carries no secret. The bridge holding the
charger reads the new password from the registry and sends it; a charger that is offline
gets it after its next accepted BootNotification, and so does one that accepted it but
came back with the old password (it lost it).

Value on the wire (OCPP 1.6 security whitepaper, "AuthorizationKey": 16-20 bytes,
hexadecimal): the hex digits of the password's UTF-8 bytes. Rotated passwords are 20
printable characters, so the charger decodes 40 hex digits to exactly the string the
registry hashed and presents it in HTTP Basic auth. An OCPP 2.0.1 station gets the plain
string through SetVariables ``SecurityCtrlr/BasicAuthPassword``
(:mod:`bridge.v201.credentials`); everything else here is the same for both versions.

The charger's answer (its ``status``, or for 2.0.1 its ``attributeStatus``): Accepted
(or RebootRequired: it will use it after a reboot) keeps both passwords valid until the
charger connects with the new one, for at most the registry's ``old_password_grace``
(24 h by default, :data:`twin.registry.OLD_PASSWORD_GRACE`): then the old password
expires and the rotation ends ``done`` with the reason "old password expired"
(:meth:`CredentialRotations.run_expiry` looks every ``expiry_interval``; a check of the
old password after that moment ends it too). Rejected, NotSupported (2.0.1: Rejected,
UnknownComponent, UnknownVariable, NotSupportedAttributeType) or a CALLERROR fail the
rotation and the old password stays. Every change is reported in the shadow without the
secret (``reported.security.credentials``) and written to the audit log.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from bridge.commands import Request
from bridge.errors import CallErrorReceived, OutgoingCallError
from bridge.reports import Reporter
from bridge.tasks import TaskSet
from chargetwin.audit import AuditLog, Outcome
from twin.registry import ChargerRegistry, Rotation, RotationStatus

log = logging.getLogger(__name__)

COMMAND = "rotate-credentials"
"""The name of the command-topic request that says "a rotation is waiting"."""
_COMMAND_MARK = f'"{COMMAND}"'.encode()
CONFIGURATION_KEY = "AuthorizationKey"
_KEPT = frozenset({"Accepted", "RebootRequired"})


def authorization_key(password: str) -> str:
    """The AuthorizationKey value of a password: hex of its UTF-8 bytes (1.6 whitepaper)."""
    return password.encode().hex()


class CredentialRotations:
    """What every connection shares: the registry, the shadow reporter, the audit log."""

    def __init__(
        self,
        registry: ChargerRegistry,
        reporter: Reporter,
        audit: AuditLog | None = None,
        *,
        expiry_interval: float = 60.0,
    ) -> None:
        self.registry = registry
        self.reporter = reporter
        self.audit = audit
        self.expiry_interval = expiry_interval
        registry.on_rotation = self.changed

    async def run_expiry(self) -> None:
        """Until cancelled: every ``expiry_interval``, end the rotations whose old password
        outlived its grace (several bridges may run this: the first to update wins, the
        others find nothing)."""
        while True:
            try:
                await self.registry.expire_old_passwords()
            except Exception as exc:  # the database is away: the next round tries again
                log.warning("expiring old charger passwords failed: %s", exc)
            await asyncio.sleep(self.expiry_interval)

    async def changed(self, rotation: Rotation) -> None:
        """A rotation changed in this process: into the shadow, then the audit log."""
        self.reporter.report(
            rotation.charger_id,
            {"security": {"credentials": rotation.as_dict()}},
            rotation.updated_at,
        )
        if self.audit is None:
            return
        failed = rotation.status is RotationStatus.FAILED
        # Done by the charger connecting with the new password; by us when the old expired.
        by_charger = rotation.status is RotationStatus.DONE and rotation.reason is None
        try:
            await self.audit.record(
                actor="charger" if by_charger else "bridge",
                actor_id=None,
                role="system",
                charger_id=rotation.charger_id,
                action="credentials.rotate",
                patch={"rotationId": rotation.rotation_id, "status": rotation.status.value},
                outcome=Outcome.REJECTED if failed else Outcome.ACCEPTED,
                status=409 if failed else 200,
                detail=rotation.reason,
            )
        except Exception as exc:  # the rotation itself is stored; only its audit line is lost
            log.warning("%s: rotation not written to the audit log: %s", rotation.charger_id, exc)


class ChargerCredentials:
    """One connection's part: sends the open rotation's password, one attempt at a time."""

    # What carries the password on the wire (log lines); :meth:`_send` sends it.
    carrier = CONFIGURATION_KEY

    def __init__(
        self,
        charger_id: str,
        request: Request,
        rotations: CredentialRotations | None,
        tasks: TaskSet,
    ) -> None:
        self.charger_id = charger_id
        self._request = request
        self._rotations = rotations
        self._tasks = tasks
        self._running = False
        self._again = False

    def claims(self, command: bytes) -> bool:
        """True for a ``rotate-credentials`` request (then handled here, not as an OCPP
        command): the API says a rotation is waiting in the registry."""
        if _COMMAND_MARK not in command:
            return False
        try:
            message: Any = json.loads(command)
        except ValueError:
            return False
        if not isinstance(message, dict) or message.get("name") != COMMAND:
            return False
        self.poke(asked=True)
        return True

    def poke(self, *, asked: bool = False) -> None:
        """Look for an open rotation and carry it: after a boot (no query when the
        password check of this connection found none), or when the API asks."""
        if self._rotations is None:
            return
        if self._running:
            # Asked while a look is under way that may have read before the rotation
            # was stored: look once more when it ends.
            self._again = self._again or asked
            return
        if not asked and not self._rotations.registry.may_be_rotating(self.charger_id):
            return
        self._running = True
        self._tasks.spawn(self._carry(self._rotations), "credentials")

    async def _carry(self, rotations: CredentialRotations) -> None:
        try:
            found = await rotations.registry.rotation_secret(self.charger_id)
            if found is None:
                return
            rotation, secret = found
            log.info(
                "%s: sending a new %s (%s)", self.charger_id, self.carrier, rotation.rotation_id
            )
            try:
                status = await self._send(secret)
            except CallErrorReceived as exc:
                await self._answered(rotations, rotation, False, f"CALLERROR {exc.error_code}")
                return
            except OutgoingCallError as exc:
                # No answer: the charger may or may not have it. The rotation stays
                # pending (both passwords valid) and is sent again after the next boot.
                log.warning("%s: %s not confirmed: %s", self.charger_id, self.carrier, exc)
                return
            await self._answered(rotations, rotation, status in _KEPT, status)
        except asyncio.CancelledError:
            self._again = False  # the connection is closing: its next boot looks again
            raise
        except Exception as exc:  # the registry is down: tried again after the next boot
            log.warning("%s: password rotation not carried: %s", self.charger_id, exc)
        finally:
            self._running = False
            if self._again:
                self._again = False
                self.poke(asked=True)

    async def _send(self, secret: str) -> str:
        """Set the password on the charger; its answer's status (Accepted, Rejected...)."""
        payload = {"key": CONFIGURATION_KEY, "value": authorization_key(secret)}
        answer = await self._request("ChangeConfiguration", payload)
        return str(answer.get("status"))

    async def _answered(
        self, rotations: CredentialRotations, rotation: Rotation, kept: bool, status: str
    ) -> None:
        log.info(
            "%s: %s %s (%s)",
            self.charger_id,
            self.carrier,
            "accepted" if kept else "refused",
            status,
        )
        if rotation.status is RotationStatus.ACCEPTED and kept:
            return  # sent again to a charger that came back with the old one: nothing new
        await rotations.registry.rotation_answered(
            self.charger_id, rotation.rotation_id, kept, None if status == "Accepted" else status
        )
