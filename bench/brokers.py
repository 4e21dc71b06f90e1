"""The MQTT broker a benchmark runs against: a private Mosquitto configured as in production.

Why private: the broker's own settings change the figures (``set_tcp_nodelay`` alone moves
shadow latency by ~30 ms), so benchmarks use the production values of ``mosquitto/``
rather than whatever broker the machine runs. ``CHARGETWIN_BENCH_MQTT_URL`` points them at
another broker instead (then say which in the results).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ENV = "CHARGETWIN_BENCH_MQTT_URL"

# The performance-relevant lines of mosquitto/mosquitto.conf, without users and ACLs.
_SETTINGS = """\
allow_anonymous true
set_tcp_nodelay true
max_packet_size 1048576
max_inflight_messages 100
max_queued_messages 100000
max_queued_bytes 268435456
persistence false
log_dest none
"""


def broker_url() -> str:
    """The broker of this run (set by :func:`bench_broker`)."""
    return os.environ.get(ENV, "mqtt://127.0.0.1:1883")


@contextlib.contextmanager
def bench_broker() -> Iterator[str]:
    """Yield a broker URL: ``$CHARGETWIN_BENCH_MQTT_URL``, or a private Mosquitto."""
    if os.environ.get(ENV):
        yield os.environ[ENV]
        return
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "mosquitto.conf"
        config.write_text(f"listener {port} 127.0.0.1\n{_SETTINGS}user {getpass.getuser()}\n")
        proc = subprocess.Popen([binary, "-c", str(config)], stderr=subprocess.DEVNULL)
        try:
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                    break
                except OSError:
                    time.sleep(0.05)
            url = f"mqtt://127.0.0.1:{port}"
            os.environ[ENV] = url
            print(f"broker: private Mosquitto at {url} (production settings of mosquitto/)")
            yield url
        finally:
            os.environ.pop(ENV, None)
            proc.terminate()
            proc.wait(10)
