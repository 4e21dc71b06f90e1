"""Many chargers from one process: 200 connect and boot quickly; progress is logged."""

from __future__ import annotations

import logging
import time

import pytest
from simulator_helpers import CentralSystem, fast_options, running


async def test_two_hundred_chargers_connect_and_boot_quickly(
    central: CentralSystem, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="simulator.fleets")
    started = time.monotonic()
    async with running(fast_options(central.url, chargers=200, ramp_s=0.5)) as fleet:
        await fleet.wait_for(booted=200, timeout=12)
        took = time.monotonic() - started
        print(f"\n200 chargers connected and booted in {took:.2f} s")
        counts = fleet.counts
        assert counts.connected == 200 and counts.booted == 200 and counts.errors == 0
        assert len(central.connections) == 200
        boots = {cid for cid, action, _ in central.received if action == "BootNotification"}
        assert len(boots) == 200
    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("connected")]
    assert progress[0].startswith("connected 20/200")
    assert progress[-1].startswith("connected 200/200")
    assert 9 <= len(progress) <= 11
    assert took < 12
