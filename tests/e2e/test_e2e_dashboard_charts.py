"""The dashboard's charts drawn from a simulated fleet's own sessions, in headless Chromium.

Simulated chargers charge over real websockets through the bridge, which records their
transactions; the usage view then shows them, with no console error or uncaught exception
(this Chromium logs every console message as ``INFO:CONSOLE``). The charts' figures
against known data are tested in ``tests/api/test_api_dashboard_charts_browser.py``.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from e2e_operations import ADMIN, platform

from simulator.options import SessionTiming

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PAGE_ERRORS = re.compile(r"Uncaught|:CONSOLE\b")
CHARGERS = 4
SESSIONS = 6
QUICK = SessionTiming(
    auto_sessions=True, idle_s=(0.2, 1.0), duration_s=(3.0, 3.0),
    plug_delay_s=0.1, unplug_delay_s=0.2,
    time_scale=300.0,  # a 3 s session charges for 15 minutes: whole kWh in the chart
)  # fmt: skip

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")


async def dump_dom(url: str, screenshot: Path) -> tuple[str, list[str]]:
    """The page's DOM after its scripts ran, and the errors its console showed; a PNG."""
    assert CHROMIUM is not None
    dom, errors = "", []
    for mode in ("--dump-dom", f"--screenshot={screenshot}"):
        with tempfile.TemporaryDirectory() as profile:
            process = await asyncio.create_subprocess_exec(
                CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
                "--window-size=1400,2000", "--virtual-time-budget=8000", mode, url,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                env={**os.environ, "TZ": "UTC"},
            )  # fmt: skip
            try:
                out, err = await asyncio.wait_for(process.communicate(), 120)
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
        dom = dom or out.decode()
        errors += [line for line in err.decode().splitlines() if PAGE_ERRORS.search(line)]
    print(f"screenshot: {screenshot}")
    return dom, errors


def attribute_of(dom: str, element_id: str, name: str) -> str:
    tag = re.search(rf'<\w+[^>]*\bid="{element_id}"[^>]*>', dom)
    assert tag, f"no #{element_id}"
    value = re.search(rf'\b{name}="([^"]*)"', tag.group(0))
    assert value, tag.group(0)
    return value.group(1)


async def test_the_usage_charts_show_a_simulated_fleet_s_sessions(
    tmp_path: Path, mosquitto_url: str
) -> None:
    async with platform(tmp_path, mosquitto_url, chargers=CHARGERS, sessions=QUICK) as ops:
        deadline = time.monotonic() + 90
        while True:
            usage = (await ops.api.get("/usage")).json()
            if usage["sessions"] >= SESSIONS and usage["energyKwh"] >= 1:  # some ended
                break
            assert time.monotonic() < deadline, usage
            await asyncio.sleep(1)

        dom, errors = await dump_dom(
            f"{ops.api_url}/?view=usage#token={ADMIN}", tmp_path / "simulated-fleet.png"
        )
        assert errors == []
        sessions = int(attribute_of(dom, "chart-sessions", "data-total"))
        assert sessions >= SESSIONS
        assert float(attribute_of(dom, "chart-energy", "data-total")) >= 1
        assert "<canvas" in dom.split('id="chart-energy"', 1)[1][:5000]
        heatmap = re.findall(r'<span class="hm-cell [^"]*"[^>]*data-count="(\d+)"', dom)
        assert len(heatmap) == 7 * 24 and sum(map(int, heatmap)) == sessions
        bars = re.search(r'<ol[^>]*\bid="util-bars"[^>]*>(.*?)</ol>', dom, re.S)
        assert bars and len(re.findall(r"<li\b", bars.group(1))) == CHARGERS
        assert ops.fleet is not None
        charger = ops.fleet.chargers[0].id
        panel, errors = await dump_dom(
            f"{ops.api_url}/?charger={charger}#token={ADMIN}", tmp_path / "charger.png"
        )
        assert errors == []
        assert "<canvas" in panel.split('id="chart-detail-energy"', 1)[1][:5000]
