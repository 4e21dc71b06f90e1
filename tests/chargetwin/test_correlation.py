"""Request and answer by clientToken, against a real broker and when there is none."""

from __future__ import annotations

import asyncio
import json
from typing import Any

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


class CountingClient(MqttClient):
    """The real client, counting the SUBSCRIBEs it sends."""

    subscribed: list[str]

    async def subscribe_acked(self, topic_filter: str, *args: Any, **kwargs: Any) -> None:
        self.subscribed.append(topic_filter)
        await super().subscribe_acked(topic_filter, *args, **kwargs)


async def test_many_requests_share_one_wildcard_subscription(
    mosquitto_url: str, prefix: str
) -> None:
    """Inside ``listening``, every request is answered through the one wildcard filter: one
    SUBSCRIBE for the batch, none per request, and the filter is dropped afterwards."""
    answerer = MqttProbe(mosquitto_url)
    await answerer.subscribe(f"{prefix}/+/ask")
    client = CountingClient(mosquitto_url, f"{prefix}-asker")
    client.subscribed = []
    await client.connect()
    try:
        asker = Correlator(client)

        async def answer_all(n: int) -> None:
            for topic, payload in await answerer.collect(f"{prefix}/", n):
                unit = topic.split("/")[1]
                token = json.loads(payload)["clientToken"]
                await answerer.publish(f"{prefix}/{unit}/answer", {"clientToken": token, "u": unit})

        answering = asyncio.create_task(answer_all(20))
        async with asker.listening((f"{prefix}/+/answer",), 5):
            answers = await asyncio.gather(
                *(
                    asker.ask(
                        f"{prefix}/u{i}/ask", {}, (f"{prefix}/u{i}/answer",), 5, subscribe=False
                    )
                    for i in range(20)
                )
            )
        await answering
        assert [a["u"] for _, a in answers] == [f"u{i}" for i in range(20)]
        assert client.subscribed == [f"{prefix}/+/answer"]
        assert dict(asker._users) == {} and not asker._pending and not asker._expected
        assert f"{prefix}/+/answer" not in client._handlers
    finally:
        answerer.close()
        await client.disconnect()


async def test_an_answer_on_another_topic_is_not_taken_for_ours(
    mosquitto_url: str, prefix: str
) -> None:
    """A wildcard brings every charger's answers: one carrying our token on a topic we did
    not ask on is dropped; the one on our topic is taken."""
    answerer = MqttProbe(mosquitto_url)
    await answerer.subscribe(f"{prefix}/+/ask")
    client = MqttClient(mosquitto_url, f"{prefix}-asker")
    await client.connect()
    try:
        asker = Correlator(client)
        async with asker.listening((f"{prefix}/+/answer",), 5):
            asking = asyncio.create_task(
                asker.ask(f"{prefix}/a/ask", {}, (f"{prefix}/a/answer",), 5, subscribe=False)
            )
            request = await answerer.expect(f"{prefix}/a/ask")
            token = request["clientToken"]
            await answerer.publish(f"{prefix}/b/answer", {"clientToken": token, "from": "b"})
            await asyncio.sleep(0.3)
            assert not asking.done()
            await answerer.publish(f"{prefix}/a/answer", {"clientToken": token, "from": "a"})
            topic, answer = await asking
        assert (topic, answer["from"]) == (f"{prefix}/a/answer", "a")
    finally:
        answerer.close()
        await client.disconnect()


async def test_listening_without_a_broker_is_a_timeout() -> None:
    client = MqttClient("mqtt://127.0.0.1:1", "nobody-listens")  # never connected
    asker = Correlator(client)
    try:
        async with asker.listening(("t/+/answer",), 0.3):
            raise AssertionError("the block must not run without the subscription")
    except TimeoutError:
        pass
    assert dict(asker._users) == {}
    await client.disconnect()
