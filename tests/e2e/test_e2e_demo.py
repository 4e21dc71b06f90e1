"""`chargetwin demo` as a new user runs it, with the README's `chargetwin simulate` beside it.

The demo prints a link that signs in; the README's simulated fleet comes in next to the
demo's own chargers (none refused, none taken for a demo charger); and the log keeps to one
line per event (APScheduler's two lines per rule group run stay out of it).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from pathlib import Path

import httpx
from brokers import free_port

DEMO_CHARGERS = 4
SIMULATED = 5
README_PASSWORD = "a-long-random-secret"  # README.md, Using it


async def stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(process.wait(), 30)
        except TimeoutError:
            process.kill()
            await process.wait()


async def test_the_readme_simulation_runs_beside_the_demo(tmp_path: Path) -> None:
    api_port, ocpp_port, mqtt_port = free_port(), free_port(), free_port()
    demo_out, demo_log = tmp_path / "demo.out", tmp_path / "demo.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHARGETWIN_")}
    with demo_out.open("wb") as out, demo_log.open("wb") as err:
        demo = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "launch.cli", "demo", "--chargers", str(DEMO_CHARGERS),
            "--api-port", str(api_port), "--ocpp-port", str(ocpp_port),
            "--mqtt-port", str(mqtt_port), "--data-dir", str(tmp_path / "data"),
            stdout=out, stderr=err, env=env,
        )  # fmt: skip
    simulate = None
    try:
        link = None
        deadline = time.monotonic() + 60
        while link is None:
            assert demo.returncode is None, demo_log.read_text()
            assert time.monotonic() < deadline, demo_out.read_text() + demo_log.read_text()
            await asyncio.sleep(0.2)
            link = re.search(r"dashboard\s*: (http://\S+/)#token=(\S+)", demo_out.read_text())
        base, token = link.group(1), link.group(2)
        assert base == f"http://127.0.0.1:{api_port}/"

        # The README's example, with the demo's OCPP port (README.md, Using it).
        simulate = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "launch.cli", "simulate",
            "--url", f"ws://127.0.0.1:{ocpp_port}/ocpp", "--chargers", str(SIMULATED),
            "--password", README_PASSWORD,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, env=env,
        )  # fmt: skip
        async with httpx.AsyncClient(base_url=f"{base}api/v1") as http:
            # The token of the link is the one the API takes.
            headers = {"Authorization": f"Bearer {token}"}
            deadline = time.monotonic() + 60
            while True:
                answer = await http.get("/chargers", params={"limit": 100}, headers=headers)
                assert answer.status_code == 200, answer.text
                online = sorted(c["id"] for c in answer.json()["items"] if c["online"])
                if len(online) == DEMO_CHARGERS + SIMULATED:
                    break
                assert time.monotonic() < deadline, (online, demo_log.read_text()[-3000:])
                await asyncio.sleep(0.5)
            assert sum(1 for c in online if c.startswith("DEMO-")) == DEMO_CHARGERS
            assert sum(1 for c in online if c.startswith("SIM-")) == SIMULATED
            # The rule groups run at start: their runs are in the engine, not in the log.
            await asyncio.sleep(1)
    finally:
        if simulate is not None:
            await stop(simulate)
        await stop(demo)

    log = demo_log.read_text()
    assert "refused" not in log.replace("(0 refused)", ""), log
    assert "apscheduler" not in log, log
    assert not re.search(r"Running job|executed successfully", log), log
