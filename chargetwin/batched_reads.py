"""Reads of one kind that arrive together go to the database together.

Why: in a reconnect storm thousands of connections each read one row (a charger's password
hash, whether it ever booted) at the same moment; one query each would queue them behind
the database's thread one round trip at a time. A read that finds nothing waiting starts
a query at once; the reads that arrive meanwhile share the next one (at most
``max_batch`` keys per query).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

__all__ = ["BatchedReads"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BatchedReads(Generic[K, V]):
    """``read(key)`` answered by ``fetch(keys)`` over every key waiting at the time.

    ``fetch`` returns the value of each key it found; a key it did not find reads None.
    When ``fetch`` raises, every read of that batch raises the same exception.
    """

    def __init__(
        self,
        fetch: Callable[[Sequence[K]], Awaitable[dict[K, V]]],
        name: str,
        max_batch: int = 500,
    ) -> None:
        self._fetch = fetch
        self._name = name
        self.max_batch = max_batch
        self._waiting: dict[K, list[asyncio.Future[V | None]]] = {}
        self._reading: asyncio.Task[None] | None = None

    async def read(self, key: K) -> V | None:
        answer: asyncio.Future[V | None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(answer)
        if self._reading is None or self._reading.done():
            self._reading = asyncio.get_running_loop().create_task(
                self._read_waiting(), name=self._name
            )
        return await answer

    async def _read_waiting(self) -> None:
        while self._waiting:
            keys = list(itertools.islice(self._waiting, self.max_batch))
            batch = {key: self._waiting.pop(key) for key in keys}
            try:
                found = await self._fetch(keys)
            except Exception as exc:  # each waiting read answers it
                for answers in batch.values():
                    for answer in answers:
                        if not answer.done():
                            answer.set_exception(exc)
                continue
            for key, answers in batch.items():
                value = found.get(key)
                for answer in answers:
                    if not answer.done():
                        answer.set_result(value)
