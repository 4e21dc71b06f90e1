"""OCPP dateTime values <-> epoch seconds, and how far a charger's clock is believed.

OCPP 1.6 sends dateTime as ISO 8601 / RFC 3339 text (the JSON schemas' ``date-time``; in
practice ``2024-05-01T12:00:00Z``, sometimes with fractions or an offset, sometimes
without a zone). The schemas declare ``format: date-time`` but the validator does not check
formats, so anything may reach us, and a schema-valid dateTime may still come from a
broken clock (an RTC reset to 2000-01-01, a year 9999). Every charger-supplied time goes
through one :class:`ChargerClock` per connection before anything is published:

- **plausible** times are kept: not more than :data:`MAX_AHEAD_S` ahead of receipt, and
  not older than the connection's start minus :data:`MAX_QUEUED_S`;
- anything else (unreadable, ahead, too old) is replaced by the receipt time, and the
  skew is reported (``reported.connection.clockSkew`` and the ``clockSkew`` event).

Why these bounds. Ahead: chargers set their clock from the ``currentTime`` of
BootNotification.conf and Heartbeat.conf (OCPP 1.6 sections 4.2 and 4.6), so a synchronised
clock is within seconds; the twin refuses a report more than 300 s ahead as a whole
(``twin.requests.MAX_CLOCK_SKEW``), and a kept time ahead of ours would win over every
receipt-stamped write of the same leaf until our clock catches up, so the margin is kept
well below it. Behind: a charger queues transaction-related messages while offline and
delivers them after reconnecting (OCPP 1.6 section 4.8 and the transaction-related
messages of OCPP-J), so a time before the
connection started is normal, but only within how long a charger can plausibly have been
offline with its queue intact; older than that it is a reset clock. The window also keeps
every time far inside what the time-series stores hold (nanosecond integers: 1677-2262).

Connector state is ordered separately (:meth:`ChargerClock.state_stamp`): on one socket
OCPP-J delivers a charger's CALLs one at a time and in order, so a later StatusNotification
is the newer state whatever its clock says, and a connection's state is newer than anything
an earlier connection reported.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)

# A kept charger time is at most this far ahead of our receipt time (see above).
MAX_AHEAD_S = 60.0
# ... and at most this far before the connection started (offline queue, see above).
MAX_QUEUED_S = 7 * 24 * 3600.0
# A persistent skew is reported again at most this often (the event is for rules).
SKEW_REPORT_INTERVAL_S = 300.0
# The charger's text is kept in the report, cut to this length.
_MAX_SHOWN = 64
# State stamps of one connection strictly increase per connector by at least this much.
_STEP = 1e-6


def now() -> float:
    return time.time()


def parse_timestamp(value: object) -> float | None:
    """Epoch seconds of an OCPP dateTime, or None when absent, unreadable or unrepresentable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            # A dateTime without a zone is taken as UTC: the OCPP 1.6 specification asks
            # chargers to keep and send all times in UTC.
            parsed = parsed.replace(tzinfo=UTC)
        epoch = parsed.timestamp()
    except (ValueError, OverflowError):
        return None
    return epoch if math.isfinite(epoch) else None


def iso_time(epoch: float | None = None) -> str:
    """An OCPP dateTime for ``epoch`` (now when None): UTC, milliseconds, ``Z``."""
    moment = datetime.fromtimestamp(time.time() if epoch is None else epoch, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Reading:
    """One charger-supplied time, judged: ``at`` is the time to publish."""

    at: float
    received: float
    status: str  # "ok" (kept), "absent", "unreadable", "ahead", "behind"
    skew: float | None = None  # charger time minus receipt time, when readable

    @property
    def kept(self) -> bool:
        return self.status == "ok"


def judge(value: object, received: float, connected_at: float) -> Reading:
    """Whether the charger's ``value`` is plausible at ``received`` (pure; see the module)."""
    if value is None:
        return Reading(received, received, "absent")
    epoch = parse_timestamp(value)
    if epoch is None:
        return Reading(received, received, "unreadable")
    skew = epoch - received
    if skew > MAX_AHEAD_S:
        return Reading(received, received, "ahead", skew)
    if epoch < connected_at - MAX_QUEUED_S:
        return Reading(received, received, "behind", skew)
    return Reading(epoch, received, "ok", skew)


SkewReport = Callable[[dict[str, Any] | None, float], None]


class ChargerClock:
    """One connection's judge of its charger's times, and the order of its state reports.

    ``on_skew(clock_skew, at)`` is called with the ``reported.connection.clockSkew`` value
    to publish (None: the clock is fine) when that changes, and at most every
    :data:`SKEW_REPORT_INTERVAL_S` while a skew persists.
    """

    def __init__(self, charger_id: str, connected_at: float, on_skew: SkewReport) -> None:
        self.charger_id = charger_id
        self.connected_at = connected_at
        self._on_skew = on_skew
        self._skewed: str | None = None  # the status last reported, None: in sync/unknown
        self._skew_reported_at = -math.inf
        # The connection's online report cleared an earlier skew (bridge.reports.Reporter).
        self._in_sync_reported = True
        self._state_floor = connected_at
        self._state: dict[str, float] = {}

    def read(self, value: object, action: str) -> float:
        """The time to publish for the charger's ``value`` received now (see :func:`judge`)."""
        # The common case inlined (every MeterValue passes here): a plausible time from a
        # clock already known to be in sync.
        if self._in_sync_reported and self._skewed is None and isinstance(value, str):
            epoch = parse_timestamp(value)
            received = now()
            if epoch is not None and (
                self.connected_at - MAX_QUEUED_S <= epoch <= received + MAX_AHEAD_S
            ):
                return epoch
        return self.reading(value, action).at

    def reading(self, value: object, action: str) -> Reading:
        """:meth:`read`, with whether the charger's own time was kept."""
        reading = judge(value, now(), self.connected_at)
        if reading.status == "ok":
            assert reading.skew is not None
            if abs(reading.skew) <= MAX_AHEAD_S:
                self._in_sync(reading)
        elif reading.status != "absent":
            self._refused(reading, value, action)
        return reading

    def _refused(self, reading: Reading, value: object, action: str) -> None:
        if (
            reading.status == self._skewed
            and reading.received - self._skew_reported_at < SKEW_REPORT_INTERVAL_S
        ):
            return
        log.warning(
            "%s: %s dateTime %.64r not believed (%s); using receipt time",
            self.charger_id,
            action,
            value,
            reading.status,
        )
        self._skewed = reading.status
        self._skew_reported_at = reading.received
        self._in_sync_reported = False
        self._on_skew(
            {
                "status": reading.status,
                "seconds": None if reading.skew is None else round(reading.skew, 3),
                "action": action,
                "value": str(value)[:_MAX_SHOWN],
                "at": reading.received,
            },
            reading.received,
        )

    def _in_sync(self, reading: Reading) -> None:
        # Whenever a skew reported on this connection is gone (the online report cleared
        # what an earlier one left).
        if self._in_sync_reported and self._skewed is None:
            return
        self._skewed = None
        self._in_sync_reported = True
        self._on_skew(None, reading.received)

    # --- connector state ordering -------------------------------------------------------------
    def state_stamp(self, key: str, at: float) -> float:
        """The source time of a report about ``key`` (a connector): ``at``, but never
        earlier than the connection's start or than the last report of ``key`` on it."""
        previous = self._state.get(key)
        stamp = max(at, self._state_floor if previous is None else previous + _STEP)
        self._state[key] = stamp
        return stamp

    def reset_state(self, at: float) -> float:
        """Forget every connector (a boot): the stamp for the report that clears them."""
        stamp = max([at, self._state_floor, *self._state.values()]) + _STEP
        self._state.clear()
        self._state_floor = stamp + _STEP  # what the charger reports next is newer
        return stamp
