"""Request and answer over MQTT 3.1.1, correlated by ``clientToken``.

One mechanism for every client that asks a component something (shadow requests, charger
commands): the answer topics are subscribed, with the broker's SUBACK awaited, only while
someone waits on them, counted per set of topics so the process receives only answers it
asked for; one map of futures keyed by token is cleaned up in ``finally``.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import defaultdict
from typing import Any

from chargetwin.mqtt import MqttClient

Answer = tuple[str, dict[str, Any]]


class Correlator:
    def __init__(self, mqtt: MqttClient) -> None:
        self._mqtt = mqtt
        self._pending: dict[str, asyncio.Future[Answer]] = {}
        self._users: dict[tuple[str, ...], int] = defaultdict(int)
        self._locks: dict[tuple[str, ...], asyncio.Lock] = defaultdict(asyncio.Lock)

    async def ask(
        self,
        topic: str,
        request: dict[str, Any],
        answer_topics: tuple[str, ...],
        timeout: float,
    ) -> Answer:
        """Publish ``request`` with a fresh clientToken on ``topic``; return the topic the
        answer came on and the answer. Raises :class:`TimeoutError` after ``timeout``."""
        token = uuid.uuid4().hex
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._pending[token] = future
        acquired = False
        try:
            # One deadline for everything, subscribing included: with the broker away the
            # caller gets a timeout, not a wait as long as the outage.
            async with asyncio.timeout(timeout):
                await self._acquire(answer_topics)
                acquired = True
                self._mqtt.publish(topic, {**request, "clientToken": token})
                return await future
        finally:
            self._pending.pop(token, None)
            if acquired:
                await self._release(answer_topics)

    async def _acquire(self, topics: tuple[str, ...]) -> None:
        async with self._locks[topics]:
            self._users[topics] += 1
            if self._users[topics] == 1:
                try:
                    for topic in topics:
                        await self._mqtt.subscribe_acked(topic, self._on_answer)
                except BaseException:
                    await self._drop(topics)
                    raise

    async def _release(self, topics: tuple[str, ...]) -> None:
        async with self._locks[topics]:
            await self._drop(topics)

    async def _drop(self, topics: tuple[str, ...]) -> None:
        self._users[topics] -= 1
        if self._users[topics] == 0:
            del self._users[topics]
            for topic in topics:
                self._mqtt.unsubscribe(topic)

    async def _on_answer(self, topic: str, payload: bytes) -> None:
        try:
            answer = json.loads(payload)
        except ValueError:
            return
        if not isinstance(answer, dict):
            return
        future = self._pending.get(str(answer.get("clientToken")))
        if future is not None and not future.done():
            future.set_result((topic, answer))
