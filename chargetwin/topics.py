"""MQTT topics of the ChargeTwin contract, as small value types that validate themselves.

Every topic lives under a configurable prefix (``chargetwin`` by default). The layout is
documented in ``docs/mqtt.md``; change it only together with that document.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The charge point identity is a path segment of the OCPP-J URL (OCPP-J 1.6 section 3.1.1,
# OCPP 2.0.1 part 4 section 3.1.1: at most 48 characters), the user name of HTTP Basic auth
# (security profiles 1 and 2), an MQTT topic level and a folder name on disk. The alphabet
# is the intersection that is safe in all four: no ":" (RFC 7617 section 2 forbids it in a
# Basic auth user id), no "/", "+", "#" (MQTT levels and wildcards), no leading "." (so
# neither "." nor ".." nor a hidden file), no leading "$" (MQTT 3.1.1 section 4.7.2
# reserves such topics), no leading "-" or "_" (read as options or private names).
CHARGER_ID_ALPHABET = "A-Z a-z 0-9 . _ -, starting with a letter or digit"
CHARGER_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,47}$")

SHADOW_OPERATIONS = ("update", "get")


class InvalidTopicError(ValueError):
    """A topic or charger id that does not fit the contract."""


def validate_charger_id(charger_id: str) -> str:
    """Return the id unchanged, or raise :class:`InvalidTopicError` saying why.

    The one check of charger ids: the API's registration, auto-registration at the bridge,
    the bridge's upgrade and the twin's shadow requests all call it.
    """
    if not CHARGER_ID_PATTERN.fullmatch(charger_id):
        raise InvalidTopicError(
            f"invalid charger id {charger_id!r}: 1-48 characters of {CHARGER_ID_ALPHABET}"
        )
    return charger_id


def is_topic_level(text: str) -> bool:
    """Whether ``text`` can be one level of a topic name: not empty, no ``/``, ``+``, ``#``
    (MQTT 3.1.1 section 4.7), not a NUL."""
    return bool(text) and not any(c in text for c in "/+#\x00")


@dataclass(frozen=True, slots=True)
class Topics:
    """Builds and parses the topics of one deployment (one prefix)."""

    prefix: str = "chargetwin"

    def __post_init__(self) -> None:
        if not self.prefix or any(c in self.prefix for c in "+#") or self.prefix.endswith("/"):
            raise InvalidTopicError(f"invalid topic prefix {self.prefix!r}")

    # --- per charger -------------------------------------------------------------------
    def charger(self, charger_id: str) -> str:
        return f"{self.prefix}/chargers/{charger_id}"

    def shadow(self, charger_id: str, operation: str, result: str | None = None) -> str:
        """``.../shadow/update``, ``.../shadow/update/accepted``, ``.../shadow/get`` ..."""
        base = f"{self.charger(charger_id)}/shadow/{operation}"
        return f"{base}/{result}" if result else base

    def presence(self, charger_id: str) -> str:
        """Retained ``{"online", "since", ...}`` published by the bridge holding the socket."""
        return f"{self.charger(charger_id)}/presence"

    def presence_change(self, charger_id: str) -> str:
        """``reported.connection`` as the twin wrote it, after every change (recorded).

        One level below :meth:`presence`, so the twin's ``+/presence`` subscription never
        receives its own messages back."""
        return f"{self.presence(charger_id)}/shadow"

    def command(self, charger_id: str) -> str:
        return f"{self.charger(charger_id)}/commands"

    def telemetry(self, charger_id: str, kind: str) -> str:
        return f"{self.charger(charger_id)}/telemetry/{kind}"

    def events(self, charger_id: str, kind: str) -> str:
        return f"{self.charger(charger_id)}/events/{kind}"

    # --- per process ---------------------------------------------------------------------
    def bridge_status(self, bridge_id: str) -> str:
        """Retained ``{"online", "since", "epoch"}`` of a bridge's MQTT connection; its last
        will says offline with the same epoch."""
        return f"{self.prefix}/bridges/{bridge_id}/status"

    def service_status(self, component: str, instance: str) -> str:
        """Retained: a twin or recorder instance has its subscriptions in place (or left).

        See :mod:`chargetwin.readiness`."""
        return f"{self.prefix}/services/{component}/{instance}/status"

    def bridge_announce(self, bridge_id: str) -> str:
        """Asks a bridge to publish the presence of every charger it holds again."""
        return f"{self.prefix}/bridges/{bridge_id}/announce"

    def fleet_wake(self) -> str:
        """Asks the leading fleet process to run an engine now (after an operator action)
        rather than at its next interval: ``{"engine": "campaigns" | "maintenance"}``."""
        return f"{self.prefix}/fleet/wake"

    # --- per site ------------------------------------------------------------------------
    def site_energy_reported(self, site: str) -> str:
        """A site's energy report after every allocator pass (docs/sites.md), recorded as
        the ``site_energy`` and ``charging_limits`` measurements (docs/telemetry.md)."""
        if not is_topic_level(site):
            raise InvalidTopicError(f"site {site!r} is not a valid MQTT topic level")
        return f"{self.prefix}/sites/{site}/energy/reported"

    def all_site_energy_reports(self) -> str:
        return f"{self.prefix}/sites/+/energy/reported"

    def site_of_energy_report(self, topic: str) -> str | None:
        """The site of a ``{prefix}/sites/{site}/energy/reported`` topic; None for others."""
        head, tail = f"{self.prefix}/sites/", "/energy/reported"
        if not topic.startswith(head) or not topic.endswith(tail):
            return None
        site = topic[len(head) : -len(tail)]
        return site if is_topic_level(site) else None

    # --- subscriptions -----------------------------------------------------------------
    def all_shadow_requests(self, operation: str) -> str:
        return f"{self.prefix}/chargers/+/shadow/{operation}"

    def all_presence(self) -> str:
        return f"{self.prefix}/chargers/+/presence"

    def all_presence_changes(self) -> str:
        return f"{self.prefix}/chargers/+/presence/shadow"

    def all_bridge_status(self) -> str:
        return f"{self.prefix}/bridges/+/status"

    def all_service_status(self) -> str:
        return f"{self.prefix}/services/+/+/status"

    # --- parsing -----------------------------------------------------------------------
    def charger_id_of(self, topic: str) -> str:
        """The raw charger id segment of a per-charger topic (not validated)."""
        head = f"{self.prefix}/chargers/"
        if not topic.startswith(head):
            raise InvalidTopicError(f"not a charger topic: {topic!r}")
        return topic[len(head) :].split("/", 1)[0]

    def bridge_id_of(self, topic: str) -> str:
        head = f"{self.prefix}/bridges/"
        if not topic.startswith(head):
            raise InvalidTopicError(f"not a bridge topic: {topic!r}")
        return topic[len(head) :].split("/", 1)[0]


def shared(topic_filter: str, group: str | None) -> str:
    """Wrap a filter in an MQTT shared subscription (``$share/group/...``) when a group is set.

    Scale-out workers of one kind join the same group so the broker spreads the load.
    """
    return f"$share/{group}/{topic_filter}" if group else topic_filter
