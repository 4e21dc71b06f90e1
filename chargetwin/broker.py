"""The embedded MQTT broker of the one-process deployment.

Two implementations, chosen by ``--embedded-broker``:

* **Mosquitto as a child process** (``auto`` when the ``mosquitto`` binary is installed).
  It keeps every QoS 1 message a subscriber has not acknowledged yet, however long the
  subscriber lags, and its persistence file in ``--data-dir`` keeps durable sessions over
  a restart. It dies with the ChargeTwin process, even after ``kill -9``
  (``PR_SET_PDEATHSIG``), so a restart finds the port free.
* **amqtt in this process** (the fallback). amqtt gives a subscriber 5 seconds (fixed in
  its code, no setting) to acknowledge each QoS 1 delivery and then drops it, so under a
  burst that a subscriber cannot absorb within 5 s acknowledged messages are lost; it also
  keeps no messages for an offline anonymous session. ``bench/embedded_broker.py`` measures
  both; ``docs/operations.md`` has the figures.

Either way, like Mosquitto 2 without configuration, the broker listens on the loopback
address only and lets local clients in without credentials; anything wider must use a real
broker with a password file and ACLs (see ``mosquitto/``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import getpass
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
MOSQUITTO_LOCATIONS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")

# What the embedded Mosquitto is told, besides its listener and persistence. The queue and
# in-flight bounds are those of the production configuration in mosquitto/: Mosquitto's
# default of 1,000 queued messages per client drops QoS 1 messages of a subscriber that
# lags by more than that, which a burst from the bridge reaches in well under a second.
MOSQUITTO_SETTINGS = """\
allow_anonymous true
set_tcp_nodelay true
max_packet_size 1048576
max_inflight_messages 100
max_queued_messages 100000
max_queued_bytes 268435456
autosave_interval 60
connection_messages false
log_dest stderr
log_type error
log_type warning
log_type notice
"""


class BrokerStartError(RuntimeError):
    """The embedded broker could not listen (usually: the port is taken)."""


class EmbeddedBroker(Protocol):
    """What the runner needs of an embedded broker."""

    name: str
    host: str
    port: int

    @property
    def url(self) -> str: ...

    async def start(self) -> None: ...

    async def wait(self) -> None:
        """Return when the broker stopped by itself (it should not)."""

    async def stop(self) -> None: ...


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could listen on ``host:port`` now.

    With ``SO_REUSEADDR``, as every server of the platform binds (asyncio's default on
    POSIX, and Mosquitto's): connections of a killed process that linger in TIME_WAIT
    then do not count as "in use", only a socket that is listening does.
    """
    # An unknown host or an address of another machine raises OSError: not "in use".
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
                sock.listen(1)
            except OSError as exc:
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    return False
                raise
    return True


def find_mosquitto(configured: Path | None = None) -> str | None:
    """The Mosquitto binary: ``configured``, else on ``PATH`` or in the usual sbin folders."""
    if configured is not None:
        return str(configured) if os.access(configured, os.X_OK) else None
    found = shutil.which("mosquitto")
    if found:
        return found
    return next((path for path in MOSQUITTO_LOCATIONS if os.access(path, os.X_OK)), None)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to send the child SIGTERM when the thread that started it ends."""
    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def _process_parent(pid: int) -> int | None:
    """The parent pid of ``pid`` (Linux ``/proc``), or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after it.
    return int(stat.rsplit(")", 1)[1].split()[1])


class MosquittoBroker:
    """Mosquitto as a child process, configured and persisted in ``folder``."""

    name = "mosquitto"

    def __init__(self, port: int, folder: Path, *, binary: str, host: str = LOOPBACK) -> None:
        self.host = host
        self.port = port
        self.folder = folder.absolute()  # Mosquitto resolves relative paths from its cwd
        self.binary = binary
        self.config = folder / "mosquitto.conf"
        self.pid_file = folder / "mosquitto.pid"
        self._process: asyncio.subprocess.Process | None = None
        self._stopping = False

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    async def start(self) -> None:
        self._stopping = False
        self.folder.mkdir(parents=True, exist_ok=True)
        await self._end_orphan()
        if not port_is_free(self.host, self.port):
            raise BrokerStartError(_port_taken_message(self.host, self.port))
        self.config.write_text(
            f"# Written by ChargeTwin at every start of the embedded broker; edits are lost.\n"
            f"listener {self.port} {self.host}\n"
            f"{MOSQUITTO_SETTINGS}"
            "persistence true\n"
            f"persistence_location {self.folder}/\n"
            # Started as root, Mosquitto would switch to the "mosquitto" user, which may not
            # write the persistence file in the data folder: stay who we are.
            f"user {getpass.getuser()}\n"
        )
        try:
            self._process = await asyncio.create_subprocess_exec(
                self.binary,
                "-c",
                str(self.config),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                # Linux only (prctl); elsewhere a broker may outlive a killed parent.
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
                start_new_session=True,  # Ctrl-C reaches us; we stop the broker last
            )
        except OSError as exc:
            raise BrokerStartError(f"cannot run {self.binary}: {exc}") from exc
        self.pid_file.write_text(f"{self._process.pid}\n")
        await self._wait_until_listening()
        log.info("embedded MQTT broker (Mosquitto, %s) listening on %s", self.binary, self.url)

    async def _wait_until_listening(self, timeout: float = 10.0) -> None:
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.returncode is not None:
                raise BrokerStartError(
                    f"the embedded Mosquitto exited with code {self._process.returncode} at "
                    "start (its reason is logged above)"
                )
            try:
                _, writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._process.wait()), 0.05)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return
        await self.stop()
        raise BrokerStartError(f"the embedded Mosquitto did not listen within {timeout:.0f} s")

    async def _end_orphan(self, timeout: float = 10.0) -> None:
        """Wait for the broker a killed ChargeTwin process left on this data folder to go.

        After ``kill -9`` the kernel sends the old broker SIGTERM (parent-death signal); it
        then saves its persistence file and exits. Wait for that rather than refuse the
        port, and end it ourselves when it was adopted by init without that signal. A
        broker whose parent is another running instance stays, and the port probe says so.
        (The parent of an embedded broker is always a ``chargetwin`` process.)
        """
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return
        if pid == os.getpid() or not _is_broker_process(pid, self.config):
            return  # gone, or the pid now belongs to something else
        parent = _process_parent(pid)
        if parent is None or _is_chargetwin(parent):
            return  # exited, or another instance's broker: the port probe tells
        # Adopted by init or a subreaper. It has the parent-death SIGTERM already, unless the
        # parent died between fork and prctl; a second one changes nothing.
        log.warning("waiting for the embedded broker of a previous run (pid %d) to stop", pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _is_broker_process(pid, self.config):
                return
            await asyncio.sleep(0.05)  # another process's exit: nothing to await but time

    async def wait(self) -> None:
        if self._process is not None:
            code = await self._process.wait()
            if not self._stopping:
                raise BrokerStartError(f"the embedded Mosquitto exited with code {code}")

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        self._stopping = True
        with contextlib.suppress(ProcessLookupError):
            process.terminate()  # Mosquitto saves its persistence file on SIGTERM
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        self.pid_file.unlink(missing_ok=True)


def _is_chargetwin(pid: int) -> bool:
    try:
        return b"chargetwin" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _is_broker_process(pid: int, config: Path) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return os.fsencode(config) in argv


class AmqttBroker:
    """amqtt in this process: the fallback when Mosquitto is not installed."""

    name = "amqtt"

    def __init__(self, port: int, host: str = LOOPBACK) -> None:
        self.host = host
        self.port = port
        self._broker: Any = None
        self._stopped = asyncio.Event()

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    async def start(self) -> None:
        from amqtt.broker import Broker

        if not port_is_free(self.host, self.port):
            raise BrokerStartError(_port_taken_message(self.host, self.port))
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
        # amqtt logs every packet at INFO; keep our logs readable.
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self._broker = Broker(config)
        try:
            await self._broker.start()
        except Exception as exc:
            raise BrokerStartError(f"embedded MQTT broker failed to start: {exc}") from exc
        log.info("embedded MQTT broker (amqtt) listening on %s", self.url)

    async def wait(self) -> None:
        await self._stopped.wait()

    async def stop(self) -> None:
        if self._broker is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._broker.shutdown(), 10)
            self._broker = None
        self._stopped.set()


def _port_taken_message(host: str, port: int) -> str:
    return (
        f"port {port} of the embedded MQTT broker is in use on {host}: choose another with "
        "--mqtt-port or CHARGETWIN_MQTT_PORT, or use the broker listening there with "
        f"--mqtt-url mqtt://{host}:{port}"
    )


AMQTT_WARNING = (
    "the embedded MQTT broker is amqtt: it drops a QoS 1 delivery that a subscriber has not "
    "acknowledged within 5 s, so bursts beyond a few hundred messages per second can lose "
    "acknowledged messages (docs/operations.md). Install Mosquitto (Debian: apt install "
    "mosquitto) and it is used instead, or pass --mqtt-url"
)


def embedded_broker(
    choice: str, port: int, data_dir: Path, mosquitto: Path | None = None
) -> EmbeddedBroker:
    """The embedded broker ``choice`` (``auto``, ``mosquitto`` or ``amqtt``) asks for."""
    if choice in ("auto", "mosquitto"):
        binary = find_mosquitto(mosquitto)
        if binary is not None:
            return MosquittoBroker(port, data_dir / "mosquitto", binary=binary)
        if choice == "mosquitto":
            where = mosquitto or "PATH, " + ", ".join(MOSQUITTO_LOCATIONS)
            raise BrokerStartError(
                f"--embedded-broker mosquitto: no executable mosquitto in {where} "
                "(install it, set --mosquitto-path, or use --embedded-broker amqtt)"
            )
    log.warning(AMQTT_WARNING)
    return AmqttBroker(port)
