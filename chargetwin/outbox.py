"""QoS 1 publishing that loses nothing when the broker goes away and comes back.

Why: gmqtt keeps unacknowledged QoS 1 messages only while the broker keeps our session;
on a reconnect without a session (a clean-session client, a restarted broker without
persistence) it drops them, and a message published while disconnected is written to a
closed socket and then dropped too (measured: 116 of 300 lost across a Mosquitto restart).
The outbox therefore

- holds every message published while the client is disconnected, in order, and sends
  them once it is connected again;
- remembers every message handed to gmqtt until its PUBACK arrives, by following gmqtt's
  in-flight store, and sends again whatever gmqtt discards on a session-less reconnect;
- tells the publisher when the broker took each message: :meth:`Outbox.publish` returns a
  future that turns True at the PUBACK, or False when the message was dropped or waited
  longer than ``confirm_timeout`` (it is still sent), so a caller can answer its own
  client only once the message is the broker's (:mod:`chargetwin.deliveries`);
- keeps what the broker acknowledged in the last ``replay_window`` seconds, so that when the
  broker restarted without persistence and lost what it still held for its subscribers,
  :meth:`Outbox.replay_recent` sends it again.

Sending waits while ``can_send`` says no: while disconnected, and after a reconnect until
the subscribers that must receive our messages are known to be subscribed again
(:class:`chargetwin.readiness.SubscriberGate`).

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
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

_FLUSH_CHUNK = 500


# A future per message: True once the broker acknowledged it, False if it was dropped or
# not acknowledged within the outbox's confirm_timeout.
Delivery = asyncio.Future[bool]


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    topic: str
    payload: bytes
    retain: bool
    delivery: Delivery
    at: float  # time.monotonic() of the publish


class Outbox:
    """Publishes QoS 1 messages through gmqtt and resends what the broker never acked."""

    def __init__(
        self,
        gmqtt_client: Any,
        can_send: Callable[[], bool],
        *,
        limit: int = 10_000,
        replay_window: float = 0.0,
        confirm_timeout: float = 10.0,
    ) -> None:
        self._client = gmqtt_client
        self._can_send = can_send
        self._limit = limit
        self._pending: deque[OutgoingMessage] = deque()
        self._inflight: OrderedDict[int, OutgoingMessage] = OrderedDict()
        # Acknowledged messages of the last replay_window seconds, oldest first.
        self._recent: deque[tuple[float, OutgoingMessage]] = deque()
        self._replay_window = replay_window
        self.confirm_timeout = confirm_timeout
        self._last_mid: int | None = None
        self._acked = asyncio.Event()
        self.dropped = 0
        self.replayed = 0
        self.tracking = self._install_tracking()

    # --- public --------------------------------------------------------------------------
    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> Delivery:
        """Send now when we may and nothing is waiting; queue otherwise (order kept).

        The returned future turns True once the broker acknowledged the message."""
        delivery: Delivery = asyncio.get_running_loop().create_future()
        message = OutgoingMessage(topic, payload, retain, delivery, time.monotonic())
        if self._can_send() and not self._pending:
            self._send(message)
        else:
            self._queue(message)
        return delivery

    def expire(self, now: float) -> None:
        """Turn False the deliveries of messages older than ``confirm_timeout`` that the
        broker has not acknowledged (they stay queued): whoever waits on them gives up.
        Called about every second; one timer per message would cost more than the rest
        of the publish."""
        cutoff = now - self.confirm_timeout
        for messages in (self._inflight.values(), self._pending):
            for message in messages:
                if message.at > cutoff:
                    break  # both are in publish order
                if not message.delivery.done():
                    message.delivery.set_result(False)

    def replay_recent(self) -> int:
        """Queue again, ahead of everything, what the broker acknowledged in the last
        ``replay_window`` seconds (it lost them with its sessions); returns how many."""
        self._forget_old(time.monotonic())
        if not self._recent:
            return 0
        # A retained message is state, not an event: replaying one that a newer message on
        # its topic has since replaced (a bridge's status of the previous connection, say)
        # would leave the broker retaining the stale one.
        newest: dict[str, OutgoingMessage] = {}
        for message in [m for _, m in self._recent] + [*self._inflight.values(), *self._pending]:
            if message.retain:
                newest[message.topic] = message
        messages = [
            message
            for _, message in self._recent
            if not message.retain or newest[message.topic] is message
        ]
        self._recent.clear()
        if not messages:
            return 0
        self._pending.extendleft(reversed(messages))
        self.replayed += len(messages)
        return len(messages)

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
                _, dropped = self._inflight.popitem(last=False)
                self._dropped(dropped)
        elif not self.tracking and not message.delivery.done():
            # Without in-flight tracking there is no PUBACK to wait for: handed over is all
            # we can tell.
            message.delivery.set_result(True)

    def _dropped(self, message: OutgoingMessage) -> None:
        self.dropped += 1
        if not message.delivery.done():
            message.delivery.set_result(False)

    def _queue(self, message: OutgoingMessage) -> None:
        self._pending.append(message)
        while len(self._pending) > self._limit:
            self._dropped(self._pending.popleft())
            if self.dropped % 1000 == 1:
                log.warning(
                    "outbox full (%d messages): dropped %d oldest", self._limit, self.dropped
                )

    async def flush(self) -> None:
        """After every (re)connect: send what waited, in order, while the link holds."""
        sent = 0
        while self._pending and self._can_send():
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
        message = self._inflight.pop(mid, None)
        if message is not None:
            if not message.delivery.done():
                message.delivery.set_result(True)
            if self._replay_window > 0:
                at = time.monotonic()
                self._recent.append((at, message))
                self._forget_old(at)
        if not self.waiting:
            self._acked.set()

    def _forget_old(self, now: float) -> None:
        recent = self._recent
        while recent and (now - recent[0][0] > self._replay_window or len(recent) > self._limit):
            recent.popleft()

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
