"""Writes of one loop turn leave as one socket write, in order, and a close sends them."""

from __future__ import annotations

import asyncio

from chargetwin.coalesced_writes import CoalescedWrites, coalesce_writes
from chargetwin.mqtt import MqttClient


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


async def test_writes_of_one_turn_are_sent_once_in_order() -> None:
    inner = RecordingTransport()
    proxy = CoalescedWrites(inner)
    proxy.write(b"a")
    proxy.write(bytearray(b"b"))
    proxy.writelines([b"c", memoryview(b"d")])
    assert inner.writes == []  # nothing before the loop turns
    await asyncio.sleep(0)
    assert inner.writes == [b"abcd"]
    proxy.write(b"e")
    await asyncio.sleep(0)
    assert inner.writes == [b"abcd", b"e"]


async def test_close_sends_what_was_written_before_it() -> None:
    inner = RecordingTransport()
    proxy = CoalescedWrites(inner)
    proxy.write(b"DISCONNECT")
    proxy.close()
    assert inner.writes == [b"DISCONNECT"] and inner.closed
    await asyncio.sleep(0)  # the scheduled flush finds nothing left
    assert inner.writes == [b"DISCONNECT"]


async def test_nothing_is_written_to_a_closing_transport() -> None:
    inner = RecordingTransport()
    proxy = CoalescedWrites(inner)
    proxy.write(b"late")
    inner.closed = True
    await asyncio.sleep(0)
    assert inner.writes == [] and proxy.is_closing()


class Holder:
    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport


async def test_a_connection_and_its_protocol_share_one_proxy_and_are_wrapped_once() -> None:
    inner = RecordingTransport()
    connection = Holder(inner)
    connection._protocol = Holder(inner)  # type: ignore[attr-defined]
    coalesce_writes(connection)
    proxy = connection._transport
    assert isinstance(proxy, CoalescedWrites) and proxy.transport is inner
    assert connection._protocol._transport is proxy  # type: ignore[attr-defined]
    coalesce_writes(connection)
    assert connection._transport is proxy


async def test_a_burst_of_publishes_reaches_a_real_broker_in_order(broker_url: str) -> None:
    received: list[bytes] = []
    done = asyncio.Event()
    topic = f"test-coalesce/{id(received)}"

    async def on_message(_topic: str, payload: bytes) -> None:
        received.append(payload)
        if len(received) == 500:
            done.set()

    async with MqttClient(broker_url, "test-coalesce-sub") as subscriber:
        await subscriber.subscribe_acked(topic, on_message)
        async with MqttClient(broker_url, "test-coalesce-pub") as publisher:
            # gmqtt's internals as chargetwin.coalesced_writes expects them (0.7, 0.8)
            connection = publisher._client._connection
            assert isinstance(connection._transport, CoalescedWrites)
            assert connection._protocol._transport is connection._transport
            for n in range(500):  # one loop turn: one socket write
                publisher.publish(topic, str(n))
            await asyncio.wait_for(done.wait(), 10)
            assert await publisher.drain(5)
    assert received == [str(n).encode() for n in range(500)]
