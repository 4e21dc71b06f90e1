"""Request and answer on a charger's shadow topics, for components that change shadows.

The API, the fleet engines and the rules engine change desired state only by publishing
``shadow/update`` (they never write the shadow store), and wait for ``accepted`` or
``rejected`` with the same ``clientToken`` (:mod:`chargetwin.correlation`), so the process
only receives answers for chargers it is asking about.

An update carries a ``deadline`` (now + the timeout, epoch seconds): the twin never applies
it later (it answers 408 instead), so a caller that timed out is never contradicted by a
late change. The caller waits ``ANSWER_GRACE`` past the deadline for that answer.
:meth:`ShadowClient.update_many` writes many shadows at once (a campaign step) under one
wildcard subscription for all their answers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from chargetwin.correlation import Correlator
from chargetwin.mqtt import MqttClient
from chargetwin.topics import Topics


class ShadowRequestError(Exception):
    """The twin refused the request (``code`` as on the ``rejected`` topic)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ShadowTimeoutError(ShadowRequestError):
    """No answer from the twin in time (is the twin service running?)."""

    def __init__(self, message: str) -> None:
        super().__init__(504, message)


class ShadowExpiredError(ShadowTimeoutError):
    """The twin got the update only after its deadline and did not apply it (its 408)."""


# How long past a request's deadline its answer is still awaited: the twin checks the
# deadline before applying, then commits and answers.
ANSWER_GRACE = 1.0


class ShadowClient:
    def __init__(self, mqtt: MqttClient, topics: Topics, *, timeout: float = 5.0) -> None:
        self._topics = topics
        self._timeout = timeout
        self._requests = Correlator(mqtt)

    async def update(
        self, charger_id: str, state: dict[str, Any], *, version: int | None = None
    ) -> dict[str, Any]:
        """Publish ``{"state": state}``; return the ``accepted`` answer or raise."""
        request: dict[str, Any] = {"state": state, "deadline": time.time() + self._timeout}
        if version is not None:
            request["version"] = version
        return await self._request(charger_id, "update", request, ANSWER_GRACE)

    async def update_many(
        self, states: Mapping[str, dict[str, Any]], *, concurrency: int = 64
    ) -> dict[str, dict[str, Any] | ShadowRequestError]:
        """Publish ``{"state": states[id]}`` to every charger; per charger the ``accepted``
        answer or the error (:class:`ShadowTimeoutError` included), never a raise.

        The answers of all of them come through one subscription to the wildcard filters
        (``.../+/shadow/update/accepted|rejected``), held for the batch, where
        :meth:`update` subscribes and unsubscribes two topics per charger. At most
        ``concurrency`` requests wait on the twin at a time, each with its own timeout.
        """
        out: dict[str, dict[str, Any] | ShadowRequestError] = {}
        if not states:
            return out
        filters = tuple(self._topics.shadow("+", "update", r) for r in ("accepted", "rejected"))
        limit = asyncio.Semaphore(concurrency)

        async def one(charger_id: str, state: dict[str, Any]) -> None:
            async with limit:
                try:
                    # The deadline counts from now: a request waiting for its turn here
                    # has not been sent yet.
                    request = {"state": state, "deadline": time.time() + self._timeout}
                    out[charger_id] = await self._request(
                        charger_id, "update", request, ANSWER_GRACE, subscribe=False
                    )
                except ShadowRequestError as exc:
                    out[charger_id] = exc

        try:
            async with self._requests.listening(filters, self._timeout), asyncio.TaskGroup() as tg:
                for charger_id, state in states.items():
                    tg.create_task(one(charger_id, state), name=f"shadow-update-{charger_id}")
        except TimeoutError:  # the broker did not confirm the subscription
            error = ShadowTimeoutError(
                f"no subscription to the twin's answers in {self._timeout:g} s"
            )
            return {charger_id: out.get(charger_id, error) for charger_id in states}
        return out

    async def get(self, charger_id: str) -> dict[str, Any]:
        return await self._request(charger_id, "get", {})

    async def delete(self, charger_id: str) -> dict[str, Any]:
        """Delete the shadow; answers ``{"version", "timestamp"}`` or raises (404: none)."""
        return await self._request(charger_id, "delete", {})

    async def _request(
        self,
        charger_id: str,
        operation: str,
        request: dict[str, Any],
        grace: float = 0.0,
        *,
        subscribe: bool = True,
    ) -> dict[str, Any]:
        answers = tuple(
            self._topics.shadow(charger_id, operation, result)
            for result in ("accepted", "rejected")
        )
        try:
            topic, answer = await self._requests.ask(
                self._topics.shadow(charger_id, operation),
                request,
                answers,
                self._timeout + grace,
                subscribe=subscribe,
            )
        except TimeoutError as exc:
            raise ShadowTimeoutError(
                f"no answer from the twin for {charger_id} in {self._timeout:g} s"
            ) from exc
        if topic.endswith("/rejected"):
            code, message = int(answer.get("code", 500)), str(answer.get("message", ""))
            if code == 408:
                raise ShadowExpiredError(f"not applied: {message}")
            raise ShadowRequestError(code, message)
        return answer
