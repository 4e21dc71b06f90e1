"""Publishing only once the subscribers that must receive it are subscribed.

Why: a broker without persistence forgets every session when it restarts. The twin and
the recorder connect again and subscribe again, but a publisher that reconnects first (the
bridge, replaying what it held during the outage) would have its messages acknowledged by
the broker and dropped for want of a subscriber: 139 MeterValues and 27 statuses of
~4,500 were lost that way. The broker cannot tell a publisher who is subscribed, so each
component that must not miss messages says so itself:

- :class:`ServiceAnnouncer`: after every connect, once its subscriptions are acknowledged,
  the component publishes the retained ``{prefix}/services/{component}/{instance}/status``
  ``{"online": true, "since", "sessionPresent"}``; its last will (and a clean stop) says
  ``{"online": false}``.
- :class:`SubscriberGate`: after every connect, the publisher holds its QoS 1 messages in
  its outbox until one instance of each component it needs is online in this broker's
  retained statuses. A restarted broker without persistence has none, so the publisher
  waits for the live announcements, which come only after the subscriptions exist; a
  broker that kept its state answers with the retained statuses at once.

Neither side gives up while its connection lives: an announcer whose SUBACKs do not come
within 30 s reconnects (and announces on the new connection) instead of staying silent,
and a gated publisher subscribes to the statuses again every 5 s, so the broker sends the
retained ones once more. Before, either left the bridge gated until some later reconnect,
each charger's call failing only after the outbox's confirm timeout: the broker-restart
fault test looked hung.

An announcement with ``sessionPresent`` false after the publisher lost its connection
means the broker lost what it held for that subscriber; the publisher then sends again
what the broker acknowledged just before (:meth:`chargetwin.outbox.Outbox.replay_recent`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from chargetwin.topics import Topics

if TYPE_CHECKING:
    from chargetwin.mqtt import MqttClient

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._\-]")
_SUBACK_TIMEOUT = 30.0


def instance_of(client_id: str) -> str:
    """A topic level from a client id (no ``/``, ``+``, ``#``)."""
    return _UNSAFE.sub("_", client_id) or "_"


class ServiceAnnouncer:
    """Says, retained, that a component's subscriptions are in place (or that it left)."""

    def __init__(
        self,
        topics: Topics,
        component: str,
        client_id: str,
        details: dict[str, Any] | None = None,
    ) -> None:
        self.topic = topics.service_status(component, instance_of(client_id))
        # Carried by every status, the will included (the twin's peers read its session).
        self.details = dict(details or {})

    @property
    def will(self) -> tuple[str, dict[str, Any], bool]:
        """The ``will`` argument of :class:`~chargetwin.mqtt.MqttClient`."""
        return self.topic, {"online": False, **self.details}, True

    async def start(self, mqtt: MqttClient) -> None:
        """Announce now (call it once every subscription is made) and after each reconnect."""
        await self._announce(mqtt)
        mqtt.on_connect(lambda: self._announce(mqtt))

    async def stop(self, mqtt: MqttClient, timeout: float = 2.0) -> None:
        """A clean stop sends no will: say offline ourselves."""
        mqtt.publish(
            self.topic, {"online": False, "since": time.time(), **self.details}, retain=True
        )
        await mqtt.drain(timeout)

    async def _announce(self, mqtt: MqttClient) -> None:
        connection = mqtt.connections
        try:
            async with asyncio.timeout(_SUBACK_TIMEOUT):
                await mqtt.wait_subscribed()
        except TimeoutError:
            if mqtt.is_connected and mqtt.connections == connection:
                # A live connection whose SUBACKs never came: giving up here left the
                # publishers gated (each charger's call failing after its timeout) until
                # some later reconnect. Start that reconnect now: it subscribes and
                # announces again.
                log.warning(
                    "%s: subscriptions not acknowledged in %g s; reconnecting",
                    self.topic,
                    _SUBACK_TIMEOUT,
                )
                await mqtt.reconnect()
            else:  # that connection is gone; the next connect announces
                log.warning("%s: subscriptions not acknowledged; not announced", self.topic)
            return
        mqtt.publish(
            self.topic,
            {
                "online": True,
                "since": time.time(),
                "sessionPresent": mqtt.session_present,
                **self.details,
            },
            retain=True,
        )


class SubscriberGate:
    """Open once one instance of every needed component announced itself online."""

    def __init__(self, topics: Topics, components: Iterable[str]) -> None:
        self.components = frozenset(c for c in components if c)
        self.topic_filter = topics.all_service_status()
        self._prefix = f"{topics.prefix}/services/"
        self._online: dict[str, set[str]] = {}
        self._fresh_sessions: list[float] = []  # "since" of announcements without a session
        self._opened = asyncio.Event()
        self.on_open: Callable[[], None] = lambda: None
        self.reset()

    @property
    def is_open(self) -> bool:
        return self._opened.is_set()

    async def wait_open(self) -> None:
        await self._opened.wait()

    @property
    def missing(self) -> list[str]:
        return sorted(c for c in self.components if not self._online.get(c))

    def reset(self) -> None:
        """A new connection: what we knew may be gone with the broker; learn it again."""
        self._online = {}
        self._fresh_sessions = []
        if self.components:
            self._opened.clear()
        else:
            self._opened.set()

    def lost_sessions_since(self, moment: float) -> bool:
        """Did a component announce, after ``moment``, that the broker lost its session?"""
        return any(since >= moment for since in self._fresh_sessions)

    async def on_status(self, topic: str, payload: bytes) -> None:
        """The MQTT handler of :attr:`topic_filter`."""
        parts = topic[len(self._prefix) :].split("/") if topic.startswith(self._prefix) else []
        if len(parts) != 3 or parts[2] != "status":
            return
        component, instance = parts[0], parts[1]
        try:
            status: Any = json.loads(payload) if payload else {}
        except ValueError:
            log.warning("service status on %s is not JSON; ignored", topic)
            return
        if not isinstance(status, dict):
            return
        online = self._online.setdefault(component, set())
        if status.get("online") is True:
            online.add(instance)
            since = status.get("since")
            if status.get("sessionPresent") is False and isinstance(since, int | float):
                self._fresh_sessions.append(float(since))
        else:
            online.discard(instance)
        if not self.is_open and not self.missing:
            self._opened.set()
            self.on_open()
