"""Group commit: the database writes of many stations' events in one transaction.

Every TransactionEvent writes its row of ``transaction_events_201`` (the idempotence
record) and its transaction's running values. One batch per event is one hop to the
SQLite thread and one commit each (a pool connection and a round trip for PostgreSQL):
with hundreds of stations metering at once those hops were most of the bridge's CPU per
event, far more than the statements themselves. The events handled while one batch
commits are written together in the next one, so the number of commits follows the
database's pace, not the stations'. No timer: a lone event is committed at once.

A caller's :meth:`GroupCommit.write` returns once its statements are committed. A batch
that fails is retried one event at a time, so an event's writes fail only for their own
error, never for another station's.
"""

from __future__ import annotations

import asyncio
import logging

from chargetwin.database import Database, DatabaseError, Params

log = logging.getLogger(__name__)

Statements = list[tuple[str, Params]]


class GroupCommit:
    """Commits the statements of concurrent callers together (module docstring)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._pending: list[tuple[Statements, asyncio.Future[None]]] = []
        self._committer: asyncio.Task[None] | None = None
        self.batches = 0  # committed batches, for tests and benchmarks

    async def write(self, statements: Statements) -> None:
        """Commit ``statements`` (in order, in one transaction with other callers')."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((statements, future))
        if self._committer is None:
            self._committer = asyncio.create_task(self._commit_pending())
        await future

    async def _commit_pending(self) -> None:
        batch: list[tuple[Statements, asyncio.Future[None]]] = []
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                await self._commit(batch)
        finally:
            self._committer = None
            for _, future in batch + self._pending:
                if not future.done():  # cancelled (the bridge stopping): nobody is answered
                    future.cancel()

    async def _commit(self, batch: list[tuple[Statements, asyncio.Future[None]]]) -> None:
        try:
            await self._db.execute_batch([s for statements, _ in batch for s in statements])
        except DatabaseError as exc:
            if len(batch) == 1:
                _settle(batch[0][1], exc)
                return
            log.warning(
                "a batch of %d events failed (%s); writing them one by one", len(batch), exc
            )
            for statements, future in batch:
                try:
                    await self._db.execute_batch(statements)
                except DatabaseError as single:
                    _settle(future, single)
                else:
                    _settle(future, None)
            return
        except Exception as exc:  # a defect: every caller answers InternalError
            for _, future in batch:
                _settle(future, exc)
            return
        self.batches += 1
        for _, future in batch:
            _settle(future, None)


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():  # the caller was cancelled (its station gone); the writes stand
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
