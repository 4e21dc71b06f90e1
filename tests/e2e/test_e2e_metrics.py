"""Prometheus metrics scraped from a real `chargetwin up` process, as Prometheus would.

A hand-written OCPP-J charger boots, sends a frame the bridge must refuse, the API is used,
a stale shadow update is refused over MQTT and a firmware campaign takes the charger; then
`/metrics` on the API port (viewer token) and on `--metrics-port` show it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from brokers import free_port
from probes import MqttProbe
from websockets.asyncio.client import connect

ADMIN = "ct_metrics_admin_" + uuid.uuid4().hex
PASSWORD = "metrics-charger-password"


class Up:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.api_port, self.ocpp_port = free_port(), free_port()
        self.mqtt_port, self.metrics_port = free_port(), free_port()
        self.log = data_dir / "platform.log"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "launch.cli", "up",
                "--api-port", str(self.api_port), "--ocpp-port", str(self.ocpp_port),
                "--mqtt-port", str(self.mqtt_port), "--metrics-port", str(self.metrics_port),
                "--data-dir", str(self.data_dir),
                stdout=log, stderr=asyncio.subprocess.STDOUT,
                env={**os.environ, "CHARGETWIN_ADMIN_TOKEN": ADMIN},
            )  # fmt: skip
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient() as http:
            while time.monotonic() < deadline:
                assert self.proc.returncode is None, self.log.read_text()
                try:
                    health = await http.get(f"http://127.0.0.1:{self.api_port}/api/v1/health")
                    if health.status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
        raise AssertionError("platform did not start:\n" + self.log.read_text())

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)
            await asyncio.wait_for(self.proc.wait(), 30)


@pytest.fixture
async def up(tmp_path: Path) -> AsyncIterator[Up]:
    platform = Up(tmp_path)
    try:
        await platform.start()
        yield platform
    finally:
        await platform.stop()


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text format, or None."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = rf"^{re.escape(name)}(?:\{{{re.escape(wanted)}\}})? ([0-9.e+-]+)$"
    match = re.search(pattern, text, re.M)
    return float(match.group(1)) if match else None


async def test_metrics_show_chargers_calls_errors_and_requests(up: Up) -> None:
    api = f"http://127.0.0.1:{up.api_port}"
    admin = {"Authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(base_url=api, headers=admin) as http:
        created = await http.post("/api/v1/chargers", json={"id": "CP-MET-1", "password": PASSWORD})
        assert created.status_code == 201, created.text
        auth = base64.b64encode(f"CP-MET-1:{PASSWORD}".encode()).decode()
        async with connect(
            f"ws://127.0.0.1:{up.ocpp_port}/ocpp/CP-MET-1",
            subprotocols=["ocpp1.6"],  # type: ignore[list-item]
            additional_headers={"Authorization": f"Basic {auth}"},
        ) as ws:
            boot = {"chargePointVendor": "Voltaro", "chargePointModel": "VX-22D"}
            await ws.send(json.dumps([2, "b1", "BootNotification", boot]))
            await ws.send(json.dumps([2, "h1", "Heartbeat", {"unexpected": 1}]))  # refused
            answers: dict[str, list[object]] = {}
            configured = False
            while len(answers) < 2 or not configured:
                message = json.loads(await asyncio.wait_for(ws.recv(), 15))
                if message[0] in (3, 4):
                    answers[str(message[1])] = message
                elif message[0] == 2 and message[2] == "GetConfiguration":  # after the boot
                    await ws.send(json.dumps([3, message[1], {"configurationKey": []}]))
                    configured = True
            assert answers["b1"][0] == 3 and answers["h1"][0] == 4

            # A shadow update with a stale version, as any MQTT client may send one: refused.
            probe = MqttProbe(f"mqtt://127.0.0.1:{up.mqtt_port}")
            try:
                update = "chargetwin/chargers/CP-MET-1/shadow/update"
                await probe.subscribe(f"{update}/rejected")
                await probe.publish(update, {"state": {"reported": {}}, "version": 10**9})
                assert (await probe.expect(f"{update}/rejected", 15))["code"] == 409
            finally:
                probe.close()
            # A campaign that takes the charger (its answer to UpdateFirmware never comes).
            firmware = await http.post("/api/v1/firmware", json={
                "vendor": "Voltaro", "model": "VX-22D", "version": "9.9.9",
                "url": "http://127.0.0.1:9/vx-22d-9.9.9.bin", "sha256": "a" * 64,
            })  # fmt: skip
            assert firmware.status_code == 201, firmware.text
            campaign = await http.post("/api/v1/campaigns", json={
                "name": "metrics", "firmwareId": firmware.json()["id"],
                "target": {"chargerIds": ["CP-MET-1"]},
            })  # fmt: skip
            assert campaign.status_code == 201, campaign.text

            deadline = time.monotonic() + 30
            while True:
                scraped = await http.get("/metrics")
                assert scraped.status_code == 200, scraped.text
                text = scraped.text
                if (
                    (sample(text, "chargetwin_shadow_updates_accepted_total") or 0) > 0
                    and (sample(text, "chargetwin_shadow_requests_refused_total") or 0) > 0
                    and re.search(r"^chargetwin_campaign_chargers\{", text, re.M)
                    and re.search(r"^chargetwin_rule_group_evaluation_seconds_count\{", text, re.M)
                ):
                    break
                assert time.monotonic() < deadline, text
                await asyncio.sleep(0.5)

        assert scraped.headers["content-type"].startswith("text/plain")
        assert sample(text, "chargetwin_chargers_connected") == 1
        assert sample(text, "chargetwin_ocpp_calls_total", action="BootNotification") == 1
        assert sample(text, "chargetwin_ocpp_calls_total", action="Heartbeat") == 1
        assert (sample(text, "chargetwin_ocpp_call_errors_total", code="FormationViolation")
                or sample(text, "chargetwin_ocpp_call_errors_total", code="FormatViolation")
                or sample(text, "chargetwin_ocpp_call_errors_total",
                          code="PropertyConstraintViolation")) == 1  # fmt: skip
        assert (sample(text, "chargetwin_ocpp_call_duration_seconds_count",
                       action="BootNotification")) == 1  # fmt: skip
        # The bridge's own call after the boot, answered by the charger.
        assert (sample(text, "chargetwin_ocpp_calls_sent_total", action="GetConfiguration",
                       outcome="answered")) == 1  # fmt: skip
        created_count = sample(
            text,
            "chargetwin_http_requests_total",
            route="/api/v1/chargers",
            method="POST",
            status="201",
        )
        assert created_count == 1
        for component in ("bridge", "twin", "rules"):
            assert sample(text, "chargetwin_mqtt_outbox_messages", component=component) is not None
        assert (sample(text, "chargetwin_rules", health="ok") or 0) + (
            sample(text, "chargetwin_rules", health="unknown") or 0
        ) + (sample(text, "chargetwin_rules", health="nodata") or 0) > 0
        assert sample(text, "chargetwin_spool_bytes") == 0
        assert sample(text, "chargetwin_shadow_requests_refused_total") == 1
        campaign_chargers = re.findall(
            r'^chargetwin_campaign_chargers\{state="(\w+)"\} ([0-9.]+)$', text, re.M
        )
        assert sum(float(n) for _, n in campaign_chargers) == 1, campaign_chargers
        evaluations = re.findall(
            r"^chargetwin_rule_group_evaluation_seconds_count\{group=.*\} ([0-9.]+)$", text, re.M
        )
        assert evaluations and all(float(n) >= 1 for n in evaluations), evaluations
        assert sample(text, "chargetwin_recorder_points_written_total") is not None

        # Prometheus without a token is refused on the API port...
        async with httpx.AsyncClient(base_url=api) as no_token:
            assert (await no_token.get("/metrics")).status_code == 401
    # ...and served on the process's own metrics port, as for a component process.
    async with httpx.AsyncClient() as plain:
        own = await plain.get(f"http://127.0.0.1:{up.metrics_port}/metrics")
    assert own.status_code == 200
    assert sample(own.text, "chargetwin_ocpp_calls_total", action="BootNotification") == 1
