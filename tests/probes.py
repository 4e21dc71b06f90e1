"""An independent MQTT client for tests (paho-mqtt, its own thread), so that our gmqtt
wrapper and the services under test cannot agree on a mistake."""

from __future__ import annotations

import asyncio
import json
import queue
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion


class MqttProbe:
    """Subscribe, publish and wait for messages from async tests."""

    def __init__(
        self, url: str, *, client_id: str | None = None, clean_session: bool = True
    ) -> None:
        """``clean_session=False`` with a ``client_id`` keeps subscriptions across restarts."""
        parts = urlsplit(url)
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"probe-{uuid.uuid4().hex[:8]}",
            protocol=paho.MQTTv311,
            clean_session=clean_session,
        )
        self._client.reconnect_delay_set(min_delay=0.2, max_delay=1)
        if parts.username:
            self._client.username_pw_set(parts.username, parts.password)
        self._messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self._subacks: queue.Queue[int] = queue.Queue()
        self._client.on_message = lambda c, u, m: self._messages.put((m.topic, m.payload))
        self._client.on_subscribe = lambda c, u, mid, rc, p: self._subacks.put(mid)
        self._client.connect(parts.hostname or "127.0.0.1", parts.port or 1883)
        self._client.loop_start()
        self.seen: list[tuple[str, bytes]] = []

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    # Waits poll with asyncio.sleep: the broker under test may run on this event loop.
    async def connected(self) -> None:
        deadline = time.monotonic() + 5
        while not self._client.is_connected():
            if time.monotonic() > deadline:
                raise TimeoutError("probe could not connect")
            await asyncio.sleep(0.01)

    async def subscribe(self, topic_filter: str) -> None:
        await self.connected()
        _, mid = self._client.subscribe(topic_filter, qos=1)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                if self._subacks.get_nowait() == mid:
                    return
            except queue.Empty:
                await asyncio.sleep(0.01)
        raise TimeoutError(f"no SUBACK for {topic_filter}")

    async def publish(self, topic: str, payload: Any, *, retain: bool = False) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        info = self._client.publish(topic, data, qos=1, retain=retain)
        deadline = time.monotonic() + 5
        while not info.is_published():
            if time.monotonic() > deadline:
                raise TimeoutError(f"publish to {topic} not acknowledged")
            await asyncio.sleep(0.005)

    async def expect(self, topic: str, timeout: float = 5.0, **match: Any) -> dict[str, Any]:
        """Wait for a JSON message on ``topic`` whose top-level fields equal ``match``."""
        deadline = time.monotonic() + timeout
        for seen_topic, payload in self.seen:
            found = _matches(seen_topic, payload, topic, match)
            if found is not None:
                self.seen.remove((seen_topic, payload))
                return found
        while time.monotonic() < deadline:
            try:
                seen_topic, payload = self._messages.get_nowait()
            except queue.Empty:
                await asyncio.sleep(0.005)
                continue
            found = _matches(seen_topic, payload, topic, match)
            if found is not None:
                return found
            self.seen.append((seen_topic, payload))
        raise AssertionError(
            f"no message on {topic} matching {match} in {timeout} s; "
            f"saw {[t for t, _ in self.seen][-10:]}"
        )

    async def collect(
        self, prefix: str, count: int, timeout: float = 10.0
    ) -> list[tuple[str, bytes]]:
        """Wait until ``count`` messages whose topic starts with ``prefix`` have arrived."""
        deadline = time.monotonic() + timeout
        while True:
            while not self._messages.empty():
                self.seen.append(self._messages.get_nowait())
            hits = [(t, p) for t, p in self.seen if t.startswith(prefix)]
            if len(hits) >= count or time.monotonic() > deadline:
                return hits
            await asyncio.sleep(0.02)

    async def silent(self, topic: str, wait: float = 0.3) -> None:
        """Assert nothing arrives on ``topic`` for ``wait`` seconds."""
        await asyncio.sleep(wait)
        while not self._messages.empty():
            self.seen.append(self._messages.get_nowait())
        hits = [t for t, _ in self.seen if t == topic]
        assert not hits, f"unexpected message(s) on {topic}"

    async def request(
        self, topic: str, payload: Any, answer_prefix: str | None = None, timeout: float = 5.0
    ) -> tuple[str, dict[str, Any]]:
        """Publish a request with a fresh clientToken; return (result topic, answer)."""
        token = uuid.uuid4().hex
        if isinstance(payload, dict):
            payload = {**payload, "clientToken": token}
        await self.publish(topic, payload)
        deadline = time.monotonic() + timeout
        base = answer_prefix or topic
        while time.monotonic() < deadline:
            try:
                seen_topic, data = self._messages.get_nowait()
            except queue.Empty:
                await asyncio.sleep(0.005)
                continue
            if seen_topic in (f"{base}/accepted", f"{base}/rejected"):
                body = json.loads(data)
                if body.get("clientToken") == token or not isinstance(payload, dict):
                    return seen_topic.rsplit("/", 1)[1], body
            self.seen.append((seen_topic, data))
        raise AssertionError(f"no answer to {topic} in {timeout} s")


def _matches(seen: str, payload: bytes, topic: str, match: dict[str, Any]) -> dict[str, Any] | None:
    if seen != topic:
        return None
    try:
        body = json.loads(payload)
    except ValueError:
        return None
    if all(body.get(k) == v for k, v in match.items()):
        return dict(body)
    return None
