"""Request and answer over MQTT 3.1.1, correlated by ``clientToken``.

One mechanism for every client that asks a component something (shadow requests, charger
commands): the answer topics are subscribed, with the broker's SUBACK awaited, only while
someone waits on them, counted per set of topics so the process receives only answers it
asked for; one map of futures keyed by token is cleaned up in ``finally``.

Many requests at once (a campaign sets the desired firmware of 500 chargers in one tick):
:meth:`Correlator.listening` holds one set of wildcard filters (``.../+/shadow/update/
accepted``) for all of them, and each :meth:`Correlator.ask` in the block passes
``subscribe=False``. One SUBSCRIBE and one UNSUBSCRIBE per batch instead of two of each per
request; the answers of other requests that the wildcard brings meanwhile are dropped on
their topic, before any JSON is parsed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from typing import Any

from chargetwin.mqtt import MqttClient

Answer = tuple[str, dict[str, Any]]


class Correlator:
    def __init__(self, mqtt: MqttClient) -> None:
        self._mqtt = mqtt
        self._pending: dict[str, asyncio.Future[Answer]] = {}
        # Concrete topics an answer may come on, per request in flight: anything else a
        # wildcard subscription delivers is dropped unparsed.
        self._expected: Counter[str] = Counter()
        self._users: dict[tuple[str, ...], int] = defaultdict(int)
        self._locks: dict[tuple[str, ...], asyncio.Lock] = defaultdict(asyncio.Lock)

    async def ask(
        self,
        topic: str,
        request: dict[str, Any],
        answer_topics: tuple[str, ...],
        timeout: float,
        *,
        subscribe: bool = True,
    ) -> Answer:
        """Publish ``request`` with a fresh clientToken on ``topic``; return the topic the
        answer came on and the answer. Raises :class:`TimeoutError` after ``timeout``.

        ``subscribe=False``: the caller holds a subscription that covers ``answer_topics``
        (:meth:`listening`), so this request costs no SUBSCRIBE of its own."""
        token = uuid.uuid4().hex
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._pending[token] = future
        self._expected.update(answer_topics)
        acquired = False
        try:
            # One deadline for everything, subscribing included: with the broker away the
            # caller gets a timeout, not a wait as long as the outage.
            async with asyncio.timeout(timeout):
                if subscribe:
                    await self._acquire(answer_topics)
                    acquired = True
                self._mqtt.publish(topic, {**request, "clientToken": token})
                return await future
        finally:
            self._pending.pop(token, None)
            self._expected.subtract(answer_topics)
            for answer_topic in answer_topics:
                if self._expected[answer_topic] <= 0:
                    del self._expected[answer_topic]
            if acquired:
                await self._release(answer_topics)

    @contextlib.asynccontextmanager
    async def listening(self, filters: tuple[str, ...], timeout: float) -> AsyncIterator[None]:
        """Hold ``filters`` subscribed (SUBACK awaited, at most ``timeout``) for the block.

        Counted like the subscriptions of :meth:`ask`, so nested or concurrent blocks on the
        same filters share one subscription. Raises :class:`TimeoutError` when the broker
        does not confirm in time."""
        async with asyncio.timeout(timeout):
            await self._acquire(filters)
        try:
            yield
        finally:
            await self._release(filters)

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
        if topic not in self._expected:
            return  # another charger's answer that a wildcard subscription brought
        try:
            answer = json.loads(payload)
        except ValueError:
            return
        if not isinstance(answer, dict):
            return
        future = self._pending.get(str(answer.get("clientToken")))
        if future is not None and not future.done():
            future.set_result((topic, answer))
