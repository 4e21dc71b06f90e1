"""Answer a client only once what its request published is the broker's.

A charger that gets a CALLRESULT forgets the message it sent (OCPP 1.6 section 4.7 has it
keep transaction messages only until they are answered), so the answer must not go out
while the telemetry, events and shadow reports the request produced still sit in this
process's memory: a kill -9 there would lose an acknowledged message. The broker's PUBACK
is the point where a message stops depending on this process.

How: the code answering a request runs its handler inside :func:`confirmed`. Every QoS 1
message that :class:`chargetwin.mqtt.MqttClient` publishes meanwhile, from that task or
from tasks it starts, adds its delivery (:class:`chargetwin.outbox.Delivery`) to the
request's :class:`Deliveries` through a context variable, so handlers publish as before
and need not pass anything along. :func:`confirmed` then waits for every PUBACK and raises
:class:`DeliveryTimeout` when one does not come in time (the outbox turns its delivery
False after its ``confirm_timeout``) or was dropped, so the request is answered with an
error and the client sends it again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Iterator
from contextvars import ContextVar
from typing import TypeVar

T = TypeVar("T")


class DeliveryTimeout(RuntimeError):
    """The broker did not acknowledge a request's messages in time (or dropped one)."""


class Deliveries:
    """The deliveries one request waits for before it is answered."""

    __slots__ = ("_futures", "closed")

    def __init__(self) -> None:
        self._futures: list[asyncio.Future[bool]] = []
        self.closed = False

    def add(self, delivery: asyncio.Future[bool]) -> None:
        # A task started by the handler may publish after the answer went out; that
        # message is its own business, not the answered request's.
        if not self.closed:
            self._futures.append(delivery)

    async def wait(self) -> None:
        """Return once every delivery is acknowledged; :class:`DeliveryTimeout` else."""
        self.closed = True
        futures, self._futures = self._futures, []
        # Awaited directly, without a timer of our own (the outbox expires them): the
        # cheapest wait there is, on the path of every MeterValues.
        failed = 0
        for future in futures:
            if not await future:
                failed += 1
        if failed:
            raise DeliveryTimeout(
                f"{failed} of {len(futures)} messages not acknowledged by the broker in time"
            )


_current: ContextVar[Deliveries | None] = ContextVar("chargetwin_deliveries", default=None)


def track(delivery: asyncio.Future[bool]) -> None:
    """Called for every QoS 1 publish: join the request being handled, if any."""
    deliveries = _current.get()
    if deliveries is not None:
        deliveries.add(delivery)


def collected() -> Deliveries | None:
    """The deliveries of the request being handled in this context, if any."""
    return _current.get()


@contextlib.contextmanager
def collecting() -> Iterator[Deliveries]:
    """Collect the deliveries of what is published inside; the caller waits for them
    (:meth:`Deliveries.wait`) before it answers, inside or after the block."""
    deliveries = Deliveries()
    token = _current.set(deliveries)
    try:
        yield deliveries
    finally:
        _current.reset(token)


async def confirmed(work: Awaitable[T]) -> T:
    """Await ``work``, then every delivery of what it published; return its result."""
    deliveries = Deliveries()
    token = _current.set(deliveries)  # not collecting(): this is the hot path
    try:
        result = await work
    except BaseException:
        deliveries.closed = True  # no answer waits for them
        raise
    finally:
        _current.reset(token)
    await deliveries.wait()
    return result
