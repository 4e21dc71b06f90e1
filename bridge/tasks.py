"""An owner for asyncio tasks, so none outlives the connection or process that started it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


class TaskSet:
    """Starts tasks, logs their failures, and cancels them all together.

    ``owner`` names what the tasks belong to (a charger id, "bridge") in every log line.
    """

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run ``coro`` as a task owned by this set; refused once the set is closed."""
        if self._closed:
            coro.close()
            raise RuntimeError(f"{self.owner}: task set is closed, cannot start {name}")
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.owner}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("%s: task %s failed", self.owner, task.get_name(), exc_info=exc)

    async def cancel_all(self) -> None:
        """Cancel every task and wait for them to finish; no new task starts afterwards."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
