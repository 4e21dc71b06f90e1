"""Baseline for the shadow benchmark: answers every update at once, stores nothing.

It shows what the broker and one Python MQTT client cost by themselves, so the twin's
figure can be read against it.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys

from chargetwin.mqtt import MqttClient


async def main(url: str, prefix: str) -> None:
    mqtt = MqttClient(url, f"{prefix}-echo")
    version = 0

    async def on_update(topic: str, payload: bytes) -> None:
        nonlocal version
        version += 1
        body = json.loads(payload)
        mqtt.publish(
            topic + "/accepted",
            {
                "state": body.get("state"),
                "version": version,
                "clientToken": body.get("clientToken"),
            },
        )

    mqtt.subscribe(f"{prefix}/chargers/+/shadow/update", on_update)
    await mqtt.connect()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await mqtt.disconnect()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
