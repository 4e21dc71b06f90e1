"""Alert notifications: every transition on MQTT, firing and resolved to webhooks.

MQTT: ``{prefix}/alerts/{state}`` (pending, firing, resolved) with the alert as JSON.
Webhooks get ``{"status": state, "alert": {...}}`` by POST, retried with backoff by one
worker task that owns the queue, so a slow receiver never stalls rule evaluation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import httpx

from chargetwin.mqtt import MqttClient
from rules.alerts import Alert

log = logging.getLogger(__name__)


class Notifier:
    def __init__(
        self,
        *,
        mqtt: MqttClient | None = None,
        prefix: str = "chargetwin",
        webhooks: Sequence[str] = (),
        attempts: int = 4,
        backoff: float = 0.5,
        queue_limit: int = 10_000,
    ) -> None:
        self.mqtt = mqtt
        self.prefix = prefix
        self.webhooks = list(webhooks)
        self.attempts = attempts
        self.backoff = backoff
        self._queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(queue_limit)
        self._client: httpx.AsyncClient | None = None
        self._worker: asyncio.Task[None] | None = None
        self.delivered = 0

    async def start(self) -> None:
        if self.webhooks:
            self._client = httpx.AsyncClient(timeout=5.0)
            self._worker = asyncio.get_running_loop().create_task(
                self._deliver(), name="rules-webhooks"
            )

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def transition(self, alert: Alert, *, webhook: bool) -> None:
        body = alert.as_dict()
        if self.mqtt is not None:
            self.mqtt.publish(f"{self.prefix}/alerts/{alert.state}", body)
        if webhook and self._worker is not None:
            try:
                self._queue.put_nowait((alert.state, body))
            except asyncio.QueueFull:
                log.warning("webhook queue full: alert %s %s not sent", alert.rule, alert.state)

    async def _deliver(self) -> None:
        assert self._client is not None
        while True:
            state, body = await self._queue.get()
            for url in self.webhooks:
                await self._post(url, {"status": state, "alert": body})

    async def _post(self, url: str, payload: dict[str, Any]) -> None:
        assert self._client is not None
        delay = self.backoff
        for attempt in range(1, self.attempts + 1):
            try:
                response = await self._client.post(url, json=payload)
                if response.status_code < 500 and response.status_code != 429:
                    if response.status_code >= 400:
                        log.warning("webhook %s refused the alert: %s", url, response.status_code)
                    else:
                        self.delivered += 1
                    return
                reason = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                reason = repr(exc)
            if attempt < self.attempts:
                await asyncio.sleep(delay)
                delay *= 2
        log.warning("webhook %s failed %d times (%s); alert dropped", url, self.attempts, reason)
