"""Taking over the broker session of a twin worker that is gone, so no request waits for it.

Why: twin workers share the load through a shared subscription (``$share/G-twin/...``) on
persistent sessions, so that nothing published while a worker restarts is lost. Mosquitto
2.0 keeps a disconnected persistent session in its shared groups and goes on handing it
its turn of the messages: with two workers and one of them killed, half of the requests
waited in the dead worker's session until it came back (21 of 40 API changes answered
504, then applied 90 s later). Expiring the session (MQTT 5) would not help: Mosquitto
drops what an expired session held instead of giving it to another member of the group.

What: every twin worker announces, retained, its client id and share group on
``{prefix}/services/twin/{instance}/status`` (its last will says the same with
``online: false``, :mod:`chargetwin.readiness`). When a worker of our group goes offline
(the will comes as soon as the broker sees the connection drop: at once after a kill -9,
within 1.5 keepalives after a silent network loss), the live worker with the smallest
client id connects under the dead worker's client id with ``clean_session=false``: the
broker hands it the session, with every message queued or unacknowledged in it. It
unsubscribes the session's shared filters at once (so the broker stops giving the session
a turn), serves what the session held through the service's own handlers (acknowledged
once durable, as always), and disconnects when nothing has come for a moment. The session
stays, empty and without subscriptions; the worker subscribes again when it returns.

A worker that returns while its session is adopted takes it back (the broker disconnects
the adopter, which never reconnects): what the adopter had not acknowledged is delivered
to the owner again. A worker that starts takes over, the same way, the sessions of the
peers whose retained status says offline (the whole group was down). Delivery stays at
least once; the shadow's rules make a repeated report harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import Callable
from typing import Any

from gmqtt import Client as GmqttClient
from gmqtt.mqtt.constants import MQTTv311

from chargetwin.mqtt import BrokerAddress, Handler, MqttClient, topic_matches
from chargetwin.topics import Topics

log = logging.getLogger(__name__)

_PUBACK_SUCCESS = 0
_PUBACK_UNSPECIFIED_ERROR = 0x80
_RETRY_PAUSE = 5.0


class _OneShotClient(GmqttClient):  # type: ignore[misc]
    """A gmqtt client that never reconnects: an adopted session whose owner came back
    belongs to the owner, and reconnecting would take it away again."""

    async def reconnect(self, delay: bool = False) -> None:
        return None


class SessionAdopter:
    """Watches the twin workers of one share group and adopts the sessions of gone ones."""

    def __init__(
        self,
        mqtt: MqttClient,
        topics: Topics,
        client_id: str,
        group: str,
        handlers: Callable[[], list[tuple[str, Handler]]],
        shared_filters: Callable[[], list[str]],
        *,
        component: str = "twin",
        settle: float = 1.0,
        idle: float = 1.0,
        longest: float = 120.0,
    ) -> None:
        self._mqtt = mqtt
        self._address: BrokerAddress = mqtt.address
        self._status_filter = f"{topics.prefix}/services/{component}/+/status"
        self._client_id = client_id
        self._group = group
        self._handlers = handlers
        self._shared_filters = shared_filters
        self._settle = settle
        self._idle = idle
        self._longest = longest
        self._online: set[str] = set()  # peers of our group whose status says online
        self._orphans: set[str] = set()  # peers gone whose sessions nobody took yet
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self.adopted_sessions = 0
        self.adopted_messages = 0

    # --- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        """Subscribe to the workers' statuses (call before connecting)."""
        self._mqtt.subscribe(self._status_filter, self._on_status)
        self._task = asyncio.create_task(self._run(), name="twin-adoption")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # --- the peers' statuses --------------------------------------------------------------
    async def _on_status(self, topic: str, payload: bytes) -> None:
        try:
            status: Any = json.loads(payload) if payload else None
        except ValueError:
            return
        if not isinstance(status, dict):
            return
        peer, group = status.get("clientId"), status.get("shareGroup")
        if not isinstance(peer, str) or not peer or group != self._group:
            return
        if peer == self._client_id:
            return
        if status.get("online") is True:
            self._online.add(peer)
            self._orphans.discard(peer)
        else:
            self._online.discard(peer)
            self._orphans.add(peer)
            self._wake.set()

    def _chosen(self) -> bool:
        """One live worker adopts: the one with the smallest client id."""
        return all(self._client_id < peer for peer in self._online)

    async def _run(self) -> None:
        retry = False
        while True:
            # A session not taken last time (the broker was away, or its owner came back
            # and its status is on its way) is looked at again after a pause; any news of
            # the peers ends the pause at once (waiting blindly here held a stopped peer's
            # requests past their deadline).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_RETRY_PAUSE if retry else None):
                    await self._wake.wait()
            # Let the statuses settle: a burst of retained ones at start, or the owner's
            # own disconnect still in progress after its clean stop.
            await asyncio.sleep(self._settle)
            self._wake.clear()
            retry = False
            if not self._mqtt.is_connected or not self._chosen():
                continue
            for peer in sorted(self._orphans):
                if peer in self._orphans and self._chosen() and await self._adopt(peer):
                    self._orphans.discard(peer)
            retry = bool(self._orphans)

    # --- adopting one session ----------------------------------------------------------------
    async def _adopt(self, peer: str) -> bool:
        """Serve what ``peer``'s session holds; True when it was emptied and released."""
        loop = asyncio.get_running_loop()
        state: dict[str, float] = {"in_progress": 0, "last": loop.time(), "received": 0}
        lost = asyncio.Event()
        handlers = self._handlers()

        async def on_message(
            client: Any, topic: str, payload: bytes, qos: int, properties: Any
        ) -> int:
            state["in_progress"] += 1
            state["received"] += 1
            self.adopted_messages += 1
            try:
                for topic_filter, handler in handlers:
                    if topic_matches(topic_filter, topic):
                        await handler(topic, payload)
                        break
            except asyncio.CancelledError:
                raise  # not acknowledged: it stays in the session
            except Exception:
                log.exception("adopted session %s: handler for %s failed", peer, topic)
                return _PUBACK_UNSPECIFIED_ERROR
            finally:
                state["in_progress"] -= 1
                state["last"] = loop.time()
            return _PUBACK_SUCCESS

        def on_disconnect(client: Any, packet: Any, exc: Exception | None = None) -> None:
            lost.set()

        client = _OneShotClient(peer, clean_session=False)
        if self._address.username:
            client.set_auth_credentials(self._address.username, self._address.password)
        client.on_message = on_message
        client.on_disconnect = on_disconnect
        tls: ssl.SSLContext | bool = ssl.create_default_context() if self._address.tls else False
        try:
            await client.connect(self._address.host, self._address.port, ssl=tls, version=MQTTv311)
        except Exception as exc:  # gmqtt raises OSError, TimeoutError and bare errors
            log.warning("cannot take over the session of twin worker %s: %s", peer, exc)
            return False
        log.warning("twin worker %s is gone: serving what its session holds", peer)
        self.adopted_sessions += 1
        for topic_filter in self._shared_filters():
            client.unsubscribe(topic_filter)
        started = state["last"] = loop.time()
        released = True
        try:
            while True:
                if lost.is_set():
                    # The owner is back (the broker handed it its session): it gets again
                    # whatever we had not acknowledged.
                    log.info("twin worker %s took its session back", peer)
                    released = False
                    break
                quiet = state["in_progress"] == 0 and loop.time() - state["last"] >= self._idle
                if quiet or loop.time() - started > self._longest:
                    break
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.1):
                        await lost.wait()
        finally:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5.0):
                    await client.disconnect()
        log.warning(
            "twin worker %s: %d messages of its session served in %.1f s",
            peer,
            state["received"],
            loop.time() - started,
        )
        return released
