"""Request and answer by clientToken, against a real broker and when there is none."""

from __future__ import annotations

import asyncio

from probes import MqttProbe

from chargetwin.correlation import Correlator
from chargetwin.mqtt import MqttClient


async def test_answers_reach_their_own_request(mosquitto_url: str, prefix: str) -> None:
    """Two requests in flight on the same answer topic each get the answer with their token."""
    answerer = MqttProbe(mosquitto_url)
    await answerer.subscribe(f"{prefix}/ask")
    client = MqttClient(mosquitto_url, f"{prefix}-asker")
    await client.connect()
    try:
        asker = Correlator(client)
        topics = (f"{prefix}/answer",)
        first = asyncio.create_task(asker.ask(f"{prefix}/ask", {"n": 1}, topics, 5))
        second = asyncio.create_task(asker.ask(f"{prefix}/ask", {"n": 2}, topics, 5))
        requests = [await answerer.expect(f"{prefix}/ask", n=n) for n in (1, 2)]
        for request in reversed(requests):  # answered out of order
            await answerer.publish(
                f"{prefix}/answer", {"clientToken": request["clientToken"], "n": request["n"]}
            )
        (_, a), (_, b) = await first, await second
        assert (a["n"], b["n"]) == (1, 2)
    finally:
        answerer.close()
        await client.disconnect()


async def test_no_broker_is_a_timeout_not_a_hang() -> None:
    client = MqttClient("mqtt://127.0.0.1:1", "nobody-asks")  # never connected
    asker = Correlator(client)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        await asker.ask("t/ask", {}, ("t/answer",), 0.3)
    except TimeoutError:
        pass
    else:
        raise AssertionError("expected a timeout")
    assert loop.time() - started < 2
    assert dict(asker._users) == {} and not asker._pending
    await client.disconnect()
