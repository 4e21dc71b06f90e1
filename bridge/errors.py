"""The bridge's exceptions; the tree is drawn in the package docstring."""

from __future__ import annotations

from typing import Any

from ocpp.exceptions import OCPPError
from ocpp.messages import MessageType

# The unique id of an answer to a frame whose own id cannot be read (OCPP-J 2.0.1 section
# 4.2.3 made the convention explicit).
UNREADABLE_ID = "-1"


class BridgeError(Exception):
    """Base of every error the bridge raises on purpose."""


class FrameError(BridgeError):
    """A frame that cannot be used: ``error`` is the OCPP-J answer.

    ``unique_id`` is the id to answer with (``"-1"`` when none can be read, as OCPP-J
    2.0.1 section 4.2.3 made explicit), ``message_type`` the frame's type when known: a
    CALLRESULT or CALLERROR is never answered (OCPP-J 1.6 section 4.2.3 answers calls).
    """

    def __init__(
        self, error: OCPPError, unique_id: str = UNREADABLE_ID, message_type: int | None = None
    ) -> None:
        details = error.details if isinstance(error.details, dict) else {}
        super().__init__(f"{error.code}: {details.get('cause', error.description)}")
        self.error = error
        self.unique_id = unique_id
        self.message_type = message_type

    @property
    def answered(self) -> bool:
        return self.message_type not in (MessageType.CallResult, MessageType.CallError)


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
