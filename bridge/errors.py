"""The bridge's exceptions; the tree is drawn in the package docstring."""

from __future__ import annotations

from typing import Any


class BridgeError(Exception):
    """Base of every error the bridge raises on purpose."""


class OutgoingCallError(BridgeError):
    """An OCPP call from the central system to a charger did not succeed.

    ``code`` is the HTTP-like status the command contract answers with.
    """

    code = 500


class InvalidCallError(OutgoingCallError):
    """The request payload does not fit the OCPP 1.6 schema of its action."""

    code = 400


class CallTimeoutError(OutgoingCallError):
    """The charger did not answer in time."""

    code = 504


class ChargerGoneError(OutgoingCallError):
    """The connection closed before the charger answered."""

    code = 504


class CallErrorReceived(OutgoingCallError):
    """The charger answered with a CALLERROR (OCPP-J 1.6 section 4.2.3)."""

    code = 502

    def __init__(self, error_code: str, description: str, details: Any = None) -> None:
        super().__init__(f"charger answered CALLERROR {error_code}: {description}")
        self.error_code = error_code
        self.description = description
        self.details = details


class InvalidResponseError(OutgoingCallError):
    """The charger's CALLRESULT does not fit the OCPP 1.6 schema of the action."""

    code = 502
