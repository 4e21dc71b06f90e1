"""Presence: whether a charger is connected, as its bridge says it and as the twin infers it.

The bridge holding a charger's socket publishes its presence (retained ``online``/``since``
plus its ``bridge`` id and the ``epoch`` of its MQTT connection, see ``bridge.app``). The
twin writes it into ``reported.connection``, ordered by ``since`` on the bridge's clock, so
a late "offline" of an old socket never beats the "online" of the new one. The twin is the
only writer of ``online`` and ``since`` (the bridge reports nothing else of a connection
but its ``clockSkew``, which a new connection's "online" clears).

The twin also infers presence: when a bridge's MQTT connection ends (its last will, or no
live status after the twin (re)connected), every charger that bridge held goes offline,
stamped with the twin's clock (the moment it learned it) and ``source: "twin"``. Two rules
then keep that inference from being stale or sticking:

- a presence "online" from a bridge known dead, under the dead connection's epoch or an
  older one, is overruled (it is the dead bridge's retained message, not news);
- a presence from the same bridge under a *newer* epoch than the one the twin declared
  dead is the bridge re-announcing a socket it held all along (after a broker restart):
  it wins over the inferred "offline", whose time it follows by one millisecond.

Everything here is pure; :mod:`twin.service` applies the writes in its batches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from twin.documents import ShadowDocument
from twin.requests import MAX_CLOCK_SKEW

# How far an overruling write is placed after the write it overrules (seconds).
STEP = 0.001

Connection = dict[str, Any]


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


@dataclass(frozen=True, slots=True)
class PresenceReport:
    """One message of ``chargers/{id}/presence``."""

    online: bool
    since: float
    bridge: str | None
    epoch: float | None
    ocpp_version: str | None

    @classmethod
    def parse(cls, body: object, now: float) -> PresenceReport | None:
        """None for anything but an object with a boolean ``online`` (an empty retained
        message clears presence and carries nothing to record)."""
        if not isinstance(body, dict) or not isinstance(body.get("online"), bool):
            return None
        since = _number(body.get("since"))
        if since is None or not 0 < since <= now + MAX_CLOCK_SKEW:
            since = now
        bridge, version = body.get("bridge"), body.get("ocppVersion")
        return cls(
            body["online"],
            since,
            bridge if isinstance(bridge, str) else None,
            _number(body.get("epoch")),
            version if isinstance(version, str) else None,
        )


@dataclass(frozen=True, slots=True)
class BridgeStatus:
    """One message of ``bridges/{id}/status`` (the last will has no ``since``)."""

    online: bool
    epoch: float | None

    @classmethod
    def parse(cls, body: object) -> BridgeStatus | None:
        if not isinstance(body, dict) or not isinstance(body.get("online"), bool):
            return None
        return cls(body["online"], _number(body.get("epoch")))


@dataclass(frozen=True, slots=True)
class BridgeLost:
    """Mark offline the chargers a bridge held, unless newer news says otherwise.

    ``epoch``: the connection that ended (the will's); None when unknown, then the epoch
    of the charger's own presence is taken. ``unless_alive``: skip when the bridge has
    announced itself since this twin connected (the start-up reconciliation)."""

    bridge: str
    epoch: float | None
    unless_alive: bool = False


@dataclass(slots=True)
class _Bridge:
    alive: bool
    epoch: float | None
    generation: int


class BridgeBook:
    """What one twin worker knows of the bridges: alive or not, under which epoch.

    ``generation`` counts this worker's MQTT connections: a bridge counts as confirmed
    alive only by a status received during the current one (retained statuses arrive
    again after each subscribe), so a broker that lost its retained messages leaves every
    bridge unconfirmed until it announces itself."""

    def __init__(self) -> None:
        self._bridges: dict[str, _Bridge] = {}
        self.generation = 0

    def new_generation(self) -> None:
        self.generation += 1

    def status(self, bridge: str, status: BridgeStatus) -> bool:
        """Record a status; False when it is older than what is known (and ignored)."""
        known = self._bridges.get(bridge)
        epoch = status.epoch
        if known is not None and known.epoch is not None:
            if epoch is None:
                epoch = known.epoch  # a will without an epoch: the connection we knew
            elif epoch < known.epoch or (
                epoch == known.epoch and status.online and not known.alive
            ):
                return False  # per connection, alive comes before dead, never after
        self._bridges[bridge] = _Bridge(status.online, epoch, self.generation)
        return True

    def dead_epoch(self, bridge: str | None) -> tuple[bool, float | None]:
        """(whether the bridge is known dead, the epoch of its last connection)."""
        known = self._bridges.get(bridge) if bridge is not None else None
        if known is None or known.alive:
            return False, None
        return True, known.epoch

    def is_dead(self, bridge: str | None, epoch: float | None) -> bool:
        """Whether a message of ``bridge`` under ``epoch`` is from a connection now gone."""
        dead, dead_epoch = self.dead_epoch(bridge)
        return dead and (epoch is None or dead_epoch is None or epoch <= dead_epoch)

    def confirmed_alive(self, bridge: str) -> bool:
        known = self._bridges.get(bridge)
        return known is not None and known.alive and known.generation == self.generation


def held_connection(doc: ShadowDocument | None) -> tuple[Connection | None, float]:
    """``reported.connection`` and the time of its ``online`` leaf (0 when absent)."""
    if doc is None:
        return None, 0.0
    connection = doc.reported.get("connection")
    if not isinstance(connection, dict):
        return None, 0.0
    meta = doc.sections["reported"].metadata.get("connection")
    at = 0.0
    if isinstance(meta, dict) and isinstance(meta.get("online"), dict):
        at = _number(meta["online"].get("timestamp")) or 0.0
    return connection, at


def presence_write(
    doc: ShadowDocument | None, report: PresenceReport, bridges: BridgeBook, now: float
) -> tuple[Connection, float] | None:
    """The ``reported.connection`` patch for a bridge's presence and its time, or None."""
    held, held_at = held_connection(doc)
    if report.online and bridges.is_dead(report.bridge, report.epoch):
        # The dead bridge's retained "online": our clock is the right one, we just learned.
        # Nothing to do when the shadow holds newer news: offline already, or online on
        # another bridge since.
        if (
            held is not None
            and held_at >= report.since
            and (held.get("online") is False or held.get("bridge") != report.bridge)
        ):
            return None
        _, dead_epoch = bridges.dead_epoch(report.bridge)
        epoch = dead_epoch if dead_epoch is not None else report.epoch
        at = max(report.since, now, held_at + STEP)
        return _inferred_offline(report.bridge, epoch, at), at
    at = report.since
    reannounced = held is not None and _reannounces(held, report)
    if reannounced:
        at = max(at, held_at + STEP)
    connection: Connection = {
        "online": report.online,
        "since": at,
        "source": "bridge",
        "bridge": report.bridge,  # None deletes a previous bridge's id
        "epoch": report.epoch,
    }
    if report.ocpp_version is not None:
        connection["ocppVersion"] = report.ocpp_version
    if report.online and not reannounced and (held is None or held.get("since") != at):
        # A new connection knows nothing of the charger's clock yet: the skew an earlier
        # one reported goes (the bridge reports a new one when it sees it). A socket
        # announced again (after an MQTT reconnect) keeps what was found on it.
        connection["clockSkew"] = None
    return connection, at


def _reannounces(held: Connection, report: PresenceReport) -> bool:
    """Whether ``report`` is its bridge speaking again after the twin declared it gone."""
    if held.get("source") != "twin" or held.get("bridge") != report.bridge:
        return False
    if report.epoch is None:
        return False
    held_epoch = _number(held.get("epoch"))
    return held_epoch is None or report.epoch > held_epoch


def lost_write(
    doc: ShadowDocument | None, lost: BridgeLost, bridges: BridgeBook, now: float
) -> tuple[Connection, float] | None:
    """The inferred "offline" of a charger whose bridge is gone, or None when it no longer
    applies (offline already, held by another bridge, or announced under a newer epoch)."""
    held, held_at = held_connection(doc)
    if held is None or held.get("online") is not True or held.get("bridge") != lost.bridge:
        return None
    held_epoch = _number(held.get("epoch"))
    if lost.epoch is not None and held_epoch is not None and held_epoch > lost.epoch:
        return None
    if lost.unless_alive and bridges.confirmed_alive(lost.bridge):
        return None
    at = max(now, held_at + STEP)
    # Presumed (no news) rather than known (a will): no epoch, so the bridge's next
    # presence of this charger, under any epoch, wins over the presumption.
    epoch = None if lost.unless_alive else lost.epoch if lost.epoch is not None else held_epoch
    return _inferred_offline(lost.bridge, epoch, at), at


def _inferred_offline(bridge: str | None, epoch: float | None, at: float) -> Connection:
    return {"online": False, "since": at, "source": "twin", "bridge": bridge, "epoch": epoch}


def presence_changed(before: tuple[object, object], doc: ShadowDocument) -> Connection | None:
    """``reported.connection`` when its ``online`` or ``since`` differ from ``before``."""
    connection, _ = held_connection(doc)
    if connection is None:
        return None
    if (connection.get("online"), connection.get("since")) == before:
        return None
    if not isinstance(connection.get("online"), bool):
        return None
    return dict(connection)


def presence_key(doc: ShadowDocument | None) -> tuple[object, object]:
    connection, _ = held_connection(doc)
    if connection is None:
        return None, None
    return connection.get("online"), connection.get("since")
