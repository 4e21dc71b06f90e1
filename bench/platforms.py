"""`chargetwin up` as a real process for the fuzzing benchmarks and their bounded tests.

The platform runs on a broker given by URL (a unique topic prefix keeps runs apart on a
shared one), with its own data folder and an admin token. Outgoing HTTP (a firmware URL
to verify, a rule's webhook) goes through a proxy that does not exist, so nothing a fuzzer
invents ever leaves the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx

# A closed port on the loopback: every proxied request fails at once, locally.
_NOWHERE = "http://127.0.0.1:9"
_START_ATTEMPTS = 3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True, slots=True)
class Platform:
    api: str  # http://127.0.0.1:PORT
    admin_token: str
    mqtt_url: str
    prefix: str
    pid: int
    log: Path

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}


@contextlib.asynccontextmanager
async def running_platform(
    mqtt_url: str, data_dir: Path, *, start_timeout: float = 60
) -> AsyncIterator[Platform]:
    """Start ``chargetwin up`` on free ports; stop it with SIGINT (then SIGKILL) on exit."""
    _make_folder(data_dir)
    token = "ct_fuzz_" + secrets.token_hex(16)
    prefix = "fuzz-" + secrets.token_hex(6)
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("no_proxy", "all_proxy")} | {
        "CHARGETWIN_ADMIN_TOKEN": token,
        "HTTP_PROXY": _NOWHERE,
        "HTTPS_PROXY": _NOWHERE,
        "ALL_PROXY": _NOWHERE,
    }
    log = data_dir / "platform.log"
    for attempt in range(_START_ATTEMPTS):
        # A free port can be taken by another process before ours binds it: try new ones.
        api_port, ocpp_port = free_port(), free_port()
        proc = await _start(env, log, mqtt_url, prefix, data_dir, api_port, ocpp_port)
        api = f"http://127.0.0.1:{api_port}"
        try:
            await _wait_healthy(proc, api, log, start_timeout)
            break
        except _PortTaken:
            if attempt == _START_ATTEMPTS - 1:
                raise
        except BaseException:
            await _stop(proc)
            raise
    try:
        yield Platform(api, token, mqtt_url, prefix, proc.pid, log)
    finally:
        await _stop(proc)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def _start(
    env: dict[str, str],
    log: Path,
    mqtt_url: str,
    prefix: str,
    data_dir: Path,
    api_port: int,
    ocpp_port: int,
) -> asyncio.subprocess.Process:
    with log.open("wb") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "launch.cli",
            "up",
            "--api-port",
            str(api_port),
            "--ocpp-port",
            str(ocpp_port),
            "--mqtt-url",
            mqtt_url,
            "--mqtt-prefix",
            prefix,
            "--data-dir",
            str(data_dir),
            "--log-level",
            "WARNING",
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
        )


class _PortTaken(RuntimeError):
    """The platform exited at start because a port it was given was taken meanwhile."""


async def _wait_healthy(
    proc: asyncio.subprocess.Process, api: str, log: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(trust_env=False) as http:
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                tail = _tail(log)
                error = _PortTaken if "address already in use" in tail else RuntimeError
                raise error(f"the platform exited:\n{tail}")
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(f"{api}/api/v1/health")).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"the platform did not become healthy:\n{_tail(log)}")


def _make_folder(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-4000:]


def server_errors_in_log(log: Path) -> list[str]:
    """Lines of the platform's log that report an unexpected error (a traceback's head)."""
    return [
        line
        for line in log.read_text(errors="replace").splitlines()
        if "unhandled error" in line or "Traceback" in line
    ]
