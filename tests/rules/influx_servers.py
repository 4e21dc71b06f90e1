"""A private ``influxd`` (Debian's influxdb 1.6) on free ports, for the rules tests."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


CONFIG = """reporting-disabled = true
bind-address = "127.0.0.1:{rpc}"
[meta]
  dir = "{root}/meta"
[data]
  dir = "{root}/data"
  wal-dir = "{root}/wal"
  query-log-enabled = false
[coordinator]
  max-select-point = 0
  max-select-series = 0
[http]
  bind-address = "127.0.0.1:{http}"
  log-enabled = false
  max-row-limit = 0
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
"""


class InfluxServer:
    """Start, stop and restart one influxd; its data survives a restart."""

    def __init__(self, root: Path) -> None:
        binary = shutil.which("influxd") or (
            "/usr/bin/influxd" if Path("/usr/bin/influxd").exists() else None
        )
        if binary is None:
            raise RuntimeError(
                "influxd not found: install Debian's influxdb package "
                "(apt-get install -y influxdb) — the rules tests need a real InfluxDB"
            )
        self.binary = binary
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.http_port = _free_port()
        self.config = root / "influxdb.conf"
        self.config.write_text(
            CONFIG.format(rpc=_free_port(), http=self.http_port, root=root), encoding="utf-8"
        )
        self.log = root / "influxd.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self, timeout: float = 30.0) -> None:
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                [self.binary, "-config", str(self.config)], stdout=log, stderr=log
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"influxd exited: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/ping", timeout=1).status_code == 204:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"influxd did not answer /ping in {timeout} s")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
