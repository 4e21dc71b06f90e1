"""QoS 1 publishing that loses nothing when the broker goes away and comes back.

Why: gmqtt keeps unacknowledged QoS 1 messages only while the broker keeps our session;
on a reconnect without a session (a clean-session client, a restarted broker without
persistence) it drops them, and a message published while disconnected is written to a
closed socket and then dropped too (measured: 116 of 300 lost across a Mosquitto restart).
The outbox therefore

- holds every message published while the client is disconnected, in order, and sends
  them once it is connected again;
- remembers every message handed to gmqtt until its PUBACK arrives, by following gmqtt's
  in-flight store, and sends again whatever gmqtt discards on a session-less reconnect.

Delivery is at least once: a message may arrive twice around a reconnect. Both queues are
bounded (``limit`` messages); past it the oldest are dropped and counted in ``dropped``.

Following the in-flight store needs gmqtt's ``Client._persistent_storage``; when a gmqtt
release lacks it, the outbox still holds what is published while disconnected and logs
that in-flight tracking is off. :class:`chargetwin.mqtt.MqttClient` owns one outbox and
sends every QoS 1 message through it, so every component gets this for free.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

_FLUSH_CHUNK = 500


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    topic: str
    payload: bytes
    retain: bool


class Outbox:
    """Publishes QoS 1 messages through gmqtt and resends what the broker never acked."""

    def __init__(
        self, gmqtt_client: Any, is_connected: Callable[[], bool], *, limit: int = 10_000
    ) -> None:
        self._client = gmqtt_client
        self._is_connected = is_connected
        self._limit = limit
        self._pending: deque[OutgoingMessage] = deque()
        self._inflight: OrderedDict[int, OutgoingMessage] = OrderedDict()
        self._last_mid: int | None = None
        self._acked = asyncio.Event()
        self.dropped = 0
        self.tracking = self._install_tracking()

    # --- public --------------------------------------------------------------------------
    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Send now when connected and nothing is waiting; queue otherwise (order kept)."""
        message = OutgoingMessage(topic, payload, retain)
        if self._is_connected() and not self._pending:
            self._send(message)
        else:
            self._queue(message)

    @property
    def waiting(self) -> int:
        """Messages not yet acknowledged by the broker (queued plus in flight)."""
        return len(self._pending) + len(self._inflight)

    async def drain(self, timeout: float) -> bool:
        """Wait until every message is acknowledged; False when ``timeout`` passed first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.waiting:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._acked.clear()
            try:
                async with asyncio.timeout(min(remaining, 0.05)):
                    await self._acked.wait()
            except TimeoutError:
                continue
        return True

    # --- sending -------------------------------------------------------------------------
    def _send(self, message: OutgoingMessage) -> None:
        self._last_mid = None
        self._client.publish(message.topic, message.payload, qos=1, retain=message.retain)
        if self.tracking and self._last_mid is not None:
            self._inflight[self._last_mid] = message
            while len(self._inflight) > self._limit:
                self._inflight.popitem(last=False)
                self.dropped += 1

    def _queue(self, message: OutgoingMessage) -> None:
        self._pending.append(message)
        while len(self._pending) > self._limit:
            self._pending.popleft()
            self.dropped += 1
            if self.dropped % 1000 == 1:
                log.warning(
                    "outbox full (%d messages): dropped %d oldest", self._limit, self.dropped
                )

    async def flush(self) -> None:
        """After every (re)connect: send what waited, in order, while the link holds."""
        sent = 0
        while self._pending and self._is_connected():
            self._send(self._pending.popleft())
            sent += 1
            if sent % _FLUSH_CHUNK == 0:
                await asyncio.sleep(0)  # let the socket drain and chargers be answered
        if sent:
            log.info("outbox: sent %d messages held while the broker was away", sent)
        if not self.waiting:
            self._acked.set()

    # --- following gmqtt's in-flight store -------------------------------------------------
    def _install_tracking(self) -> bool:
        gmqtt_client: Any = self._client
        storage: Any = getattr(gmqtt_client, "_persistent_storage", None)
        if storage is None or not hasattr(storage, "push_message"):
            log.warning(
                "outbox: cannot follow gmqtt's in-flight store; messages in flight "
                "when the broker goes away may be lost"
            )
            return False
        gmqtt_client._persistent_storage = _TrackingStorage(storage, self)
        return True

    def _on_push(self, mid: int) -> None:
        self._last_mid = mid

    def _on_ack(self, mid: int) -> None:
        self._inflight.pop(mid, None)
        if not self.waiting:
            self._acked.set()

    def _on_discard(self) -> None:
        """gmqtt drops its in-flight messages (session lost): send them again, first."""
        if not self._inflight:
            return
        lost = list(self._inflight.values())
        self._inflight.clear()
        log.info(
            "outbox: broker lost our session; %d unacknowledged messages sent again", len(lost)
        )
        self._pending.extendleft(reversed(lost))


class _TrackingStorage:
    """Wraps gmqtt's ``PersistentStorage`` and tells the outbox about pushes, acks, clears."""

    def __init__(self, inner: Any, outbox: Outbox) -> None:
        self._inner = inner
        self._outbox = outbox

    def push_message(self, mid: int, raw_package: bytes) -> None:
        self._inner.push_message(mid, raw_package)
        self._outbox._on_push(mid)

    def remove_message_by_mid(self, mid: int) -> None:
        self._inner.remove_message_by_mid(mid)
        self._outbox._on_ack(mid)

    def clear(self) -> None:
        self._outbox._on_discard()
        self._inner.clear()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
