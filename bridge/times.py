"""OCPP dateTime values <-> epoch seconds, the time unit of every MQTT payload.

OCPP 1.6 sends dateTime as ISO 8601 / RFC 3339 text (the JSON schemas' ``date-time``; in
practice ``2024-05-01T12:00:00Z``, sometimes with fractions or an offset, sometimes
without a zone). The schemas declare ``format: date-time`` but the validator does not check formats,
so an unparseable value reaches us: we fall back to receipt time and log it.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

log = logging.getLogger(__name__)


def now() -> float:
    return time.time()


def parse_timestamp(value: object, charger_id: str = "?", *, default: float | None = None) -> float:
    """Epoch seconds of an OCPP dateTime; receipt time (or ``default``) when absent or bad."""
    fallback = default if default is not None else time.time()
    if not isinstance(value, str) or not value:
        return fallback
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        log.warning("%s: unparseable OCPP dateTime %r; using receipt time", charger_id, value)
        return fallback
    if parsed.tzinfo is None:
        # A dateTime without a zone is taken as UTC: the OCPP 1.6 specification asks
        # chargers to keep and send all times in UTC.
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def iso_time(epoch: float | None = None) -> str:
    """An OCPP dateTime for ``epoch`` (now when None): UTC, milliseconds, ``Z``."""
    moment = datetime.fromtimestamp(time.time() if epoch is None else epoch, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
