"""The operator's ``--ocpp-*`` settings reach the running bridge (CLI → Settings → run)."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from pathlib import Path

import pytest
from conftest import BROKER_URL, PASSWORD, MqttWatcher, basic
from pydantic import ValidationError
from websockets.asyncio.client import connect
from websockets.frames import CloseCode

from bridge import BridgeOptions
from bridge.app import run_bridge
from bridge.tls import TlsFiles
from chargetwin.settings import Settings
from launch.cli import build_parser, load_settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_cli_options_reach_the_running_bridge(
    tmp_path: Path, prefix: str, watcher: MqttWatcher
) -> None:
    port = free_port()
    args = build_parser().parse_args(
        [
            "bridge",
            f"--ocpp-port={port}",
            f"--mqtt-url={BROKER_URL}",
            f"--mqtt-prefix={prefix}",
            f"--data-dir={tmp_path}",
            "--auto-register",
            "--ocpp-max-frame-bytes=2048",
            "--ocpp-flood-rate=0.5",
            "--ocpp-flood-burst=2",
            "--ocpp-ping-interval=0",
        ]
    )
    settings = load_settings(args)
    stop = asyncio.Event()
    task = asyncio.create_task(run_bridge(settings, stop))
    charger_id = f"cp-{uuid.uuid4().hex[:8]}"
    try:
        ws = None
        for _ in range(100):  # the bridge is listening once it has opened its stores
            try:
                ws = await connect(
                    f"ws://127.0.0.1:{port}/ocpp/{charger_id}",
                    subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                    additional_headers=basic(charger_id, PASSWORD),
                    max_size=None,
                )
                break
            except OSError:
                await asyncio.sleep(0.05)
        assert ws is not None, "the bridge did not listen"
        # Burst of 2, then 0.5 frames/s: the third call at once is over the limit. (A new
        # charger that did not boot: its calls are refused, and the bridge asks it to boot.)
        answers = []
        for n in range(3):
            await ws.send(json.dumps([2, f"hb-{n}", "Heartbeat", {}]))
            answer = json.loads(await ws.recv())
            while answer[0] == 2:  # the bridge's TriggerMessage BootNotification
                answer = json.loads(await ws.recv())
            answers.append(answer)
        assert [a[2] for a in answers] == ["SecurityError", "SecurityError", "GenericError"]
        assert answers[2][3] == "rate limit"
        # A frame over --ocpp-max-frame-bytes closes the socket with 1009.
        await ws.send(json.dumps([2, "big", "DataTransfer", {"vendorId": "v", "data": "x" * 3000}]))
        await asyncio.wait_for(ws.wait_closed(), 5)
        assert ws.close_code == CloseCode.MESSAGE_TOO_BIG
    finally:
        stop.set()
        await task


def test_from_settings_takes_every_operator_knob(tmp_path: Path) -> None:
    cert, key, ca = tmp_path / "c.pem", tmp_path / "k.pem", tmp_path / "ca.pem"
    settings = Settings(
        ocpp_ping_interval=7,
        ocpp_ping_timeout=0,
        ocpp_max_frame_bytes=4096,
        ocpp_flood_rate=3.5,
        ocpp_flood_burst=9,
        ocpp_command_timeout=12,
        ocpp_tls_cert=cert,
        ocpp_tls_key=key,
        ocpp_tls_client_ca=ca,
    )
    options = BridgeOptions.from_settings(settings, port=0)
    assert options.ping_interval == 7
    assert options.ping_timeout is None  # 0: no timeout
    assert options.max_size == 4096
    assert (options.flood.rate, options.flood.burst) == (3.5, 9)
    assert options.command_timeout == 12
    assert options.tls == TlsFiles(cert, key, ca)
    assert options.port == 0
    assert BridgeOptions.from_settings(Settings()).tls is None
    assert BridgeOptions.from_settings(Settings()) == BridgeOptions()  # same defaults


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"ocpp_tls_cert": "c.pem"}, "ocpp_tls_key"),
        ({"ocpp_tls_key": "k.pem"}, "ocpp_tls_key"),
        ({"ocpp_tls_client_ca": "ca.pem"}, "ocpp_tls_client_ca"),
        ({"ocpp_max_frame_bytes": 10}, "ocpp_max_frame_bytes"),
        ({"ocpp_flood_rate": 0}, "ocpp_flood_rate"),
    ],
)
def test_inconsistent_settings_name_the_option(fields: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        Settings(**fields)  # type: ignore[arg-type]
    assert [e["loc"][0] for e in info.value.errors()] == [field]
