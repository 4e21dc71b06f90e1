"""Retained messages that tests leave on the machine's shared broker, and their cleanup.

Bridges publish presence and status retained, so every test's unique prefix would stay
on the shared Mosquitto for good. Prefixes are noted as tests make them; at the end of the
session their retained messages are cleared (an empty retained payload deletes one), and
only theirs: another test run may be using the same broker at the same time.
"""

from __future__ import annotations

import threading
import time
import uuid
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

USED_PREFIXES: set[str] = set()

# Topic filters per SUBSCRIBE: well under any broker's packet limit.
_FILTERS_PER_SUBSCRIBE = 100


def noted(prefix: str) -> str:
    """Remember ``prefix`` for the cleanup; returns it."""
    USED_PREFIXES.add(prefix)
    return prefix


def clear_retained(url: str, prefixes: set[str], *, settle: float = 1.0) -> int:
    """Delete every retained message under ``prefixes`` on the broker at ``url``; returns
    how many were deleted. Retained messages arrive right after each SUBACK; ``settle`` is
    how long to wait for them after the last one."""
    if not prefixes:
        return 0
    parts = urlsplit(url)
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=f"test-cleanup-{uuid.uuid4().hex[:8]}"
    )
    if parts.username:
        client.username_pw_set(parts.username, parts.password)
    retained: set[str] = set()
    lock = threading.Lock()
    last_seen = [time.monotonic()]

    def on_message(_c: paho.Client, _u: object, message: paho.MQTTMessage) -> None:
        if message.retain and message.payload:
            with lock:
                retained.add(message.topic)
                last_seen[0] = time.monotonic()

    client.on_message = on_message
    client.connect(parts.hostname or "127.0.0.1", parts.port or 1883)
    client.loop_start()
    try:
        filters = [(f"{p}/#", 0) for p in sorted(prefixes)]
        for i in range(0, len(filters), _FILTERS_PER_SUBSCRIBE):
            client.subscribe(filters[i : i + _FILTERS_PER_SUBSCRIBE])
        last_seen[0] = time.monotonic()
        while time.monotonic() - last_seen[0] < settle:
            time.sleep(0.05)
        with lock:
            topics = sorted(retained)
        for topic in topics:
            client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
        return len(topics)
    finally:
        client.disconnect()
        client.loop_stop()
