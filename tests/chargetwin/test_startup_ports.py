"""Start-up ports: a taken one is refused in one line naming the option; kill -9 then restart.

Every test runs ``chargetwin`` as a real process, as a user does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from brokers import free_port

from chargetwin.broker import find_mosquitto, port_is_free

ROOT = Path(__file__).resolve().parents[2]


def _chargetwin(*args: str, data_dir: Path) -> list[str]:
    return [sys.executable, "-m", "launch.cli", *args, "--data-dir", str(data_dir)]


@contextlib.contextmanager
def _listening() -> Iterator[int]:
    """A port some other program listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def _time_wait_on(port: int) -> None:
    """Leave a connection of a closed server on ``port`` in TIME_WAIT, as kill -9 does."""
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen()
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()  # the server closes first: its side ends in TIME_WAIT
        client.recv(1)
        client.close()


def test_a_port_whose_old_connections_linger_in_time_wait_is_free() -> None:
    port = free_port()
    _time_wait_on(port)
    assert port_is_free("127.0.0.1", port)
    with _listening() as taken:
        assert not port_is_free("127.0.0.1", taken)


@pytest.mark.parametrize(
    ("command", "option", "extra"),
    [
        ("up", "api_port", []),
        ("up", "ocpp_port", []),
        ("up", "mqtt_port", []),
        ("api", "api_port", ["--mqtt-url", "mqtt://127.0.0.1:1"]),
        ("bridge", "ocpp_port", ["--mqtt-url", "mqtt://127.0.0.1:1"]),
    ],
)
def test_a_taken_port_is_one_line_that_names_the_option(
    command: str, option: str, extra: list[str], tmp_path: Path
) -> None:
    ports = {"api_port": free_port(), "ocpp_port": free_port(), "mqtt_port": free_port()}
    with _listening() as taken:
        ports[option] = taken
        argv = [f"--{name.replace('_', '-')}={port}" for name, port in ports.items()]
        done = subprocess.run(
            _chargetwin(command, *argv, *extra, data_dir=tmp_path),
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"port {taken} " in lines[0] and "in use" in lines[0]
    assert f"--{option.replace('_', '-')} or CHARGETWIN_{option.upper()}" in lines[0]


@pytest.mark.parametrize("command", ["api", "demo"])
def test_a_host_address_of_another_machine_is_one_line_that_names_the_option(
    command: str, tmp_path: Path
) -> None:
    # 192.0.2.1 is TEST-NET-1 (RFC 5737): never an address of this machine; nothing is sent.
    done = subprocess.run(
        _chargetwin(command, "--host=192.0.2.1", f"--api-port={free_port()}", data_dir=tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "192.0.2.1" in lines[0] and "--host or CHARGETWIN_HOST" in lines[0]


def test_two_servers_on_one_port_are_refused_before_anything_starts(tmp_path: Path) -> None:
    port = free_port()
    done = subprocess.run(
        _chargetwin("up", f"--api-port={port}", f"--ocpp-port={port}", data_dir=tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"chargetwin: --api-port and --ocpp-port are both {port}: choose another with "
        "--ocpp-port or CHARGETWIN_OCPP_PORT"
    ]


def _serving(api_port: int, process: subprocess.Popen[bytes], timeout: float, *others: int) -> bool:
    """The API answers healthy and every port in ``others`` accepts connections (the bridge
    starts after the API, so a healthy API alone does not mean the OCPP port is open)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        with contextlib.suppress(httpx.HTTPError, OSError):
            if httpx.get(f"http://127.0.0.1:{api_port}/api/v1/health", timeout=1).is_success:
                for port in others:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
        time.sleep(0.1)
    return False


def _start(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=out, cwd=ROOT)


def _process_alive(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return bool(cmdline)  # a zombie has none


@pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")
def test_after_kill_9_the_platform_restarts_at_once_on_the_same_ports(tmp_path: Path) -> None:
    api, ocpp, mqtt = free_port(), free_port(), free_port()
    argv = _chargetwin(
        "up",
        f"--api-port={api}",
        f"--ocpp-port={ocpp}",
        f"--mqtt-port={mqtt}",
        "--embedded-broker=mosquitto",
        data_dir=tmp_path,
    )
    first = _start(argv, tmp_path / "first.log")
    second: subprocess.Popen[bytes] | None = None
    clients: list[socket.socket] = []
    try:
        assert _serving(api, first, 120, ocpp, mqtt), (tmp_path / "first.log").read_text()
        # Connections to every server, so the killed process leaves them in TIME_WAIT.
        clients = [socket.create_connection(("127.0.0.1", port)) for port in (api, ocpp, mqtt)]
        clients[0].sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert clients[0].recv(100).startswith(b"HTTP/1.1 200")
        pid_file = tmp_path / "mosquitto" / "mosquitto.pid"
        broker_pid = int(pid_file.read_text())

        first.send_signal(signal.SIGKILL)
        first.wait(10)
        for client in clients:
            client.close()

        # Refused ports made the restart exit at once; now it serves (as fast as the
        # machine starts it: generous bound for loaded CI machines).
        second = _start(argv, tmp_path / "second.log")
        assert _serving(api, second, 120, ocpp, mqtt), (tmp_path / "second.log").read_text()
        assert not _process_alive(broker_pid)  # the killed process's broker died with it
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        for client in clients:
            client.close()


@pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")
def test_a_dead_embedded_broker_stops_the_platform_with_exit_code_1(tmp_path: Path) -> None:
    api = free_port()
    argv = _chargetwin(
        "up",
        f"--api-port={api}",
        f"--ocpp-port={free_port()}",
        f"--mqtt-port={free_port()}",
        "--embedded-broker=mosquitto",
        data_dir=tmp_path,
    )
    platform = _start(argv, tmp_path / "platform.log")
    try:
        assert _serving(api, platform, 120), (tmp_path / "platform.log").read_text()
        broker = int((tmp_path / "mosquitto" / "mosquitto.pid").read_text())
        os.kill(broker, signal.SIGKILL)
        assert platform.wait(120) == 1
        assert "embedded MQTT broker stopped" in (tmp_path / "platform.log").read_text()
    finally:
        if platform.poll() is None:
            platform.kill()
            platform.wait()


def test_demo_replaces_taken_ports_with_free_ones(capsys: pytest.CaptureFixture[str]) -> None:
    from chargetwin.settings import Settings
    from launch.runner import _demo_settings, check_ports

    with _listening() as api, _listening() as ocpp, _listening() as mqtt:
        settings, _ = _demo_settings(Settings(api_port=api, ocpp_port=ocpp, mqtt_port=mqtt))
        assert settings.api_port != api
        assert settings.ocpp_port != ocpp
        assert settings.mqtt_port != mqtt
        check_ports(settings, "demo")  # what demo chose is free
    assert f"port {api} is taken" in capsys.readouterr().err
