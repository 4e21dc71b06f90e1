"""A bounded run of bench.ocpp_fuzz: every frame class against a real bridge, in seconds.

The full figure (1,000,000 frames, RSS, log volume) is ``python -m bench.ocpp_fuzz``."""

from __future__ import annotations

import asyncio

from conftest import PASSWORD, MakeBridge, MqttWatcher, register

from bench.ocpp_fuzz import EXPECTED, FrameFuzzer, Fuzz, Tally, connect
from bridge.limits import FloodLimit


async def test_thousands_of_hostile_frames_get_their_answers_and_no_close(
    make_bridge: MakeBridge, watcher: MqttWatcher
) -> None:
    # The test bridge runs in this process with the client: the flood limit is raised so
    # that a fast machine's rate per charger cannot trip it (the bench keeps the default).
    bridge = await make_bridge(flood=FloodLimit(rate=10_000.0, burst=10_000))
    assert bridge.port is not None
    ids = [f"fuzz-{i}" for i in range(8)]
    for charger_id in ids:
        await register(bridge, charger_id)
    tally = Tally()
    fuzz = Fuzz(bridge.port, ids, FrameFuzzer(seed=7), 4_000, tally)
    chargers = [await connect(charger_id, bridge.port, PASSWORD) for charger_id in ids]
    async with asyncio.timeout(120):
        await asyncio.gather(*(fuzz.run_charger(charger) for charger in chargers))

    assert set(tally.sent) == set(EXPECTED), tally.sent  # every class was sent
    assert not any(code == "InternalError" for _, code in tally.answers), tally.answers
    assert not tally.unexpected, (tally.unexpected, tally.examples)
    assert tally.unanswered == 0 and tally.wrong_id == 0, tally.examples
    assert not tally.closes, (tally.closes, tally.examples)
