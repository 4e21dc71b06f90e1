"""The production broker configuration in ``mosquitto/``, proved against a real Mosquitto 2.

The broker runs the project's ``mosquitto.conf`` and ``acl`` with only their paths and the
listener port rewritten into a temporary folder. The expected permissions below are written
out from the design (they are not read from the ACL file), so a wrong line in the file makes
a test fail.

What Mosquitto 2.0 does with a denied operation, pinned by the tests here:

- a denied publish (MQTT 3.1.1) is acknowledged with a normal PUBACK and silently dropped;
  the client stays connected;
- a denied subscription is granted in the SUBACK (its file-based ACL does not check
  subscriptions at all), and the ACL is applied to every message at delivery instead, by
  the message's topic. That is also why shared subscriptions (``$share/GROUP/filter``) obey
  exactly the same rules as plain ones.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.client import topic_matches_sub
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

REPO = Path(__file__).resolve().parents[2]
MOSQUITTO_DIR = REPO / "mosquitto"
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])
MOSQUITTO = shutil.which("mosquitto", path=SEARCH_PATH)
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd", path=SEARCH_PATH)
OPENSSL = shutil.which("openssl")

pytestmark = pytest.mark.skipif(
    MOSQUITTO is None or MOSQUITTO_PASSWD is None,
    reason="needs the mosquitto and mosquitto_passwd binaries (Debian package 'mosquitto')",
)

TIMEOUT = 5.0  # seconds; only reached when something is wrong
USERS = ("bridge", "twin", "rules", "api", "fleet")
SPY = "ct-test-spy"  # test-only user appended to the ACL copy: reads and writes everything

# What each service may do, as docs/mqtt.md and mosquitto/README.md document it.
GRANTS: dict[str, dict[str, tuple[str, ...]]] = {
    "bridge": {
        "write": (
            "chargetwin/chargers/+/shadow/update",
            "chargetwin/chargers/+/shadow/get",
            "chargetwin/chargers/+/presence",
            "chargetwin/chargers/+/telemetry/#",
            "chargetwin/chargers/+/events/#",
            "chargetwin/chargers/+/commands/result",
            "chargetwin/bridges/+/status",
        ),
        "read": (
            "chargetwin/chargers/+/shadow/update/delta",
            "chargetwin/chargers/+/shadow/update/accepted",
            "chargetwin/chargers/+/shadow/update/rejected",
            "chargetwin/chargers/+/shadow/get/accepted",
            "chargetwin/chargers/+/shadow/get/rejected",
            "chargetwin/chargers/+/commands",
            "chargetwin/services/+/+/status",
            "chargetwin/bridges/+/announce",
        ),
    },
    "twin": {
        "write": (
            "chargetwin/chargers/+/shadow/update/accepted",
            "chargetwin/chargers/+/shadow/update/rejected",
            "chargetwin/chargers/+/shadow/update/delta",
            "chargetwin/chargers/+/shadow/update/documents",
            "chargetwin/chargers/+/shadow/get/accepted",
            "chargetwin/chargers/+/shadow/get/rejected",
            "chargetwin/chargers/+/shadow/delete/accepted",
            "chargetwin/chargers/+/shadow/delete/rejected",
            "chargetwin/services/twin/+/status",
            "chargetwin/chargers/+/presence/shadow",
            "chargetwin/bridges/+/announce",
        ),
        "read": (
            "chargetwin/chargers/+/shadow/update",
            "chargetwin/chargers/+/shadow/get",
            "chargetwin/chargers/+/shadow/delete",
            "chargetwin/chargers/+/presence",
            "chargetwin/bridges/+/status",
            # A worker reads its peers' statuses to take over a gone one's session.
            "chargetwin/services/twin/+/status",
        ),
    },
    "rules": {
        "write": (
            "chargetwin/alerts/#",
            "chargetwin/chargers/+/shadow/update",
            "chargetwin/chargers/+/commands",
            "chargetwin/services/rules/+/status",
        ),
        "read": (
            "chargetwin/sites/+/energy/reported",
            "chargetwin/chargers/+/telemetry/#",
            "chargetwin/chargers/+/events/#",
            "chargetwin/chargers/+/presence",
            "chargetwin/chargers/+/presence/shadow",
            "chargetwin/chargers/+/shadow/update/documents",
            "chargetwin/chargers/+/shadow/update/accepted",
            "chargetwin/chargers/+/shadow/update/rejected",
            "chargetwin/chargers/+/commands/result",
        ),
    },
    "api": {
        "write": (
            "chargetwin/chargers/+/shadow/update",
            "chargetwin/chargers/+/shadow/get",
            "chargetwin/chargers/+/shadow/delete",
            "chargetwin/chargers/+/commands",
            "chargetwin/fleet/wake",
        ),
        "read": (
            "chargetwin/chargers/+/shadow/delete/accepted",
            "chargetwin/chargers/+/shadow/delete/rejected",
            "chargetwin/chargers/+/shadow/update/accepted",
            "chargetwin/chargers/+/shadow/update/rejected",
            "chargetwin/chargers/+/shadow/get/accepted",
            "chargetwin/chargers/+/shadow/get/rejected",
            "chargetwin/chargers/+/commands/result",
            "chargetwin/alerts/#",
            "chargetwin/chargers/+/presence",
        ),
    },
    "fleet": {
        "write": (
            "chargetwin/chargers/+/shadow/update",
            "chargetwin/chargers/+/shadow/get",
            "chargetwin/sites/+/energy/get/accepted",
            "chargetwin/sites/+/energy/get/rejected",
            "chargetwin/sites/+/energy/update/accepted",
            "chargetwin/sites/+/energy/update/rejected",
            "chargetwin/sites/+/energy/reported",
        ),
        "read": (
            "chargetwin/chargers/+/shadow/update/accepted",
            "chargetwin/chargers/+/shadow/update/rejected",
            "chargetwin/chargers/+/shadow/get/accepted",
            "chargetwin/chargers/+/shadow/get/rejected",
            "chargetwin/fleet/wake",
            "chargetwin/chargers/+/telemetry/meterValues",
            "chargetwin/chargers/+/events/transaction",
            "chargetwin/chargers/+/shadow/update/documents",
            "chargetwin/sites/+/energy/get",
            "chargetwin/sites/+/energy/update",
        ),
    },
}

# Concrete topics tried for every user in both directions; {id} is a fresh id per case.
PROBE_TOPICS = (
    "chargetwin/chargers/{id}/shadow/update",
    "chargetwin/chargers/{id}/shadow/update/accepted",
    "chargetwin/chargers/{id}/shadow/update/rejected",
    "chargetwin/chargers/{id}/shadow/update/delta",
    "chargetwin/chargers/{id}/shadow/update/documents",
    "chargetwin/chargers/{id}/shadow/get",
    "chargetwin/chargers/{id}/shadow/get/accepted",
    "chargetwin/chargers/{id}/shadow/get/rejected",
    "chargetwin/chargers/{id}/presence",
    "chargetwin/chargers/{id}/presence/shadow",
    "chargetwin/chargers/{id}/telemetry/meter-values",
    "chargetwin/chargers/{id}/telemetry/meter-values/connector-1",
    "chargetwin/chargers/{id}/events/status-notification",
    "chargetwin/chargers/{id}/telemetry/meterValues",
    "chargetwin/chargers/{id}/events/transaction",
    "chargetwin/sites/{id}/energy/get",
    "chargetwin/sites/{id}/energy/update",
    "chargetwin/sites/{id}/energy/get/accepted",
    "chargetwin/sites/{id}/energy/get/rejected",
    "chargetwin/sites/{id}/energy/update/accepted",
    "chargetwin/sites/{id}/energy/update/rejected",
    "chargetwin/sites/{id}/energy/update/extra",
    "chargetwin/sites/{id}/energy/reported",
    "chargetwin/sites/{id}/energy/reported/extra",
    "chargetwin/chargers/{id}/commands",
    "chargetwin/chargers/{id}/commands/result",
    "chargetwin/bridges/{id}/status",
    "chargetwin/services/twin/{id}/status",
    "chargetwin/services/rules/{id}/status",
    "chargetwin/bridges/{id}/announce",
    "chargetwin/alerts/{id}/raised",
    "chargetwin/chargers/{id}/shadow/delete",
    "chargetwin/chargers/{id}/shadow/delete/accepted",
    "chargetwin/chargers/{id}/shadow/delete/rejected",
    "chargetwin/fleet/wake",
    # granted to nobody
    "chargetwin/chargers/{id}/shadow/delete/extra",
    "chargetwin/chargers/{id}/shadow/update/delta/extra",
    "chargetwin/chargers/{id}/commands/result/extra",
    "chargetwin/chargers/{id}",
    "chargetwin/{id}",
    "elsewhere/chargers/{id}/shadow/update",
)

DIRECTIONS = ("publish", "receive", "receive-shared")


def is_granted(user: str, direction: str, topic: str) -> bool:
    access = "write" if direction == "publish" else "read"
    return any(topic_matches_sub(pattern, topic) for pattern in GRANTS[user][access])


@dataclass(frozen=True)
class Case:
    user: str
    direction: str
    template: str

    @property
    def allowed(self) -> bool:
        return is_granted(self.user, self.direction, self.template.format(id="cp-1"))

    def __str__(self) -> str:
        verdict = "allowed" if self.allowed else "denied"
        short = self.template.removeprefix("chargetwin/").replace("{id}", "ID")
        return f"{self.user}-{self.direction}-{short}-{verdict}"


CASES = [
    Case(user, direction, template)
    for user in USERS
    for direction in DIRECTIONS
    for template in PROBE_TOPICS
]


# --- broker ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rewrite_config(text: str, values: dict[str, str]) -> str:
    """Replace the value of each ``key value`` line named in ``values``; every key must occur."""
    lines, seen = [], set()
    for line in text.splitlines():
        key = line.split(maxsplit=1)[0] if line.strip() and not line.startswith("#") else ""
        if key in values:
            lines.append(f"{key} {values[key]}")
            seen.add(key)
        else:
            lines.append(line)
    missing = set(values) - seen
    assert not missing, f"config lines not found, so the test can no longer rewrite them: {missing}"
    return "\n".join(lines) + "\n"


def write_password_file(path: Path, passwords: dict[str, str]) -> None:
    assert MOSQUITTO_PASSWD is not None
    path.touch(mode=0o600)
    for user, password in passwords.items():
        subprocess.run(
            [MOSQUITTO_PASSWD, "-b", str(path), user, password], check=True, capture_output=True
        )


@dataclass
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


@dataclass
class Broker:
    port: int
    tls_port: int | None
    process: subprocess.Popen[bytes]
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def wait_for_port(broker: Broker, port: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        if broker.process.poll() is not None:
            pytest.fail(f"mosquitto exited with {broker.process.returncode}:\n{broker.log_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"mosquitto does not listen on {port}:\n{broker.log_text()}")
            time.sleep(0.02)


@contextlib.contextmanager
def run_broker(
    workdir: Path,
    password_file: Path,
    *,
    extra_acl: str = "",
    tls: TlsFiles | None = None,
) -> Iterator[Broker]:
    """Mosquitto on the project's config, its paths and ports rewritten into ``workdir``."""
    assert MOSQUITTO is not None
    (workdir / "data").mkdir()
    conf_d = workdir / "conf.d"
    conf_d.mkdir()
    acl = workdir / "acl"
    acl.write_text((MOSQUITTO_DIR / "acl").read_text() + extra_acl)
    port = free_port()
    config = rewrite_config(
        (MOSQUITTO_DIR / "mosquitto.conf").read_text(),
        {
            "listener": f"{port} 127.0.0.1",
            "password_file": str(password_file),
            "acl_file": str(acl),
            "persistence_location": f"{workdir / 'data'}/",
            "include_dir": str(conf_d),
        },
    )
    # Started as root, mosquitto would switch to the "mosquitto" user, which cannot read the
    # temporary folder; ignored when not root.
    config += f"user {pwd.getpwuid(os.getuid()).pw_name}\n"
    (workdir / "mosquitto.conf").write_text(config)
    tls_port = None
    if tls is not None:
        tls_port = free_port()
        (conf_d / "tls.conf").write_text(
            rewrite_config(
                (MOSQUITTO_DIR / "tls.conf").read_text(),
                {
                    "listener": f"{tls_port} 127.0.0.1",
                    "cafile": str(tls.ca),
                    "certfile": str(tls.cert),
                    "keyfile": str(tls.key),
                },
            )
        )
    log = workdir / "mosquitto.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [MOSQUITTO, "-c", str(workdir / "mosquitto.conf")],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    broker = Broker(port, tls_port, process, log)
    try:
        wait_for_port(broker, port)
        if tls_port is not None:
            wait_for_port(broker, tls_port)
        yield broker
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- clients -----------------------------------------------------------------------------


class Peer:
    """A paho MQTT 3.1.1 client whose acknowledgements and messages can be awaited."""

    _ids = itertools.count()

    def __init__(self, name: str) -> None:
        self.client_id = f"ct-test-{name}-{next(self._ids)}"
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv311,
            # A refused or lost connection ends the test client instead of retrying.
            reconnect_on_failure=False,
        )
        self._cond = threading.Condition()
        self.connack: ReasonCode | None = None
        self.subacks: dict[int, list[ReasonCode]] = {}
        self.unsubacks: set[int] = set()
        self.messages: list[tuple[str, bytes]] = []
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_unsubscribe = self._on_unsubscribe
        self.client.on_message = self._on_message

    # callbacks run on paho's network thread
    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: ReasonCode, props: Any
    ) -> None:
        with self._cond:
            self.connack = reason_code
            self._cond.notify_all()

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any, props: Any
    ) -> None:
        with self._cond:
            self.subacks[mid] = list(reason_codes)
            self._cond.notify_all()

    def _on_unsubscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any, props: Any
    ) -> None:
        with self._cond:
            self.unsubacks.add(mid)
            self._cond.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append((message.topic, bytes(message.payload)))
            self._cond.notify_all()

    def _wait(self, predicate: Callable[[], bool], what: str) -> None:
        with self._cond:
            if not self._cond.wait_for(predicate, timeout=TIMEOUT):
                raise AssertionError(f"{self.client_id}: no {what} in {TIMEOUT} s")

    def connect(
        self, port: int, username: str | None, password: str | None, *, tls_ca: Path | None = None
    ) -> ReasonCode:
        if username is not None:
            self.client.username_pw_set(username, password)
        if tls_ca is not None:
            self.client.tls_set(ca_certs=str(tls_ca))
        self.client.connect("localhost" if tls_ca else "127.0.0.1", port, keepalive=30)
        # Without it Nagle's algorithm and delayed ACKs add 40 ms to each round trip.
        sock = self.client.socket()
        assert isinstance(sock, socket.socket)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client.loop_start()
        self._wait(lambda: self.connack is not None, "CONNACK")
        assert self.connack is not None
        return self.connack

    def subscribe(self, topic_filter: str) -> list[ReasonCode]:
        result, mid = self.client.subscribe(topic_filter, qos=1)
        assert result == mqtt.MQTT_ERR_SUCCESS and mid is not None, result
        self._wait(lambda: mid in self.subacks, f"SUBACK for {topic_filter}")
        return self.subacks[mid]

    def unsubscribe(self, topic_filter: str) -> None:
        result, mid = self.client.unsubscribe(topic_filter)
        assert result == mqtt.MQTT_ERR_SUCCESS and mid is not None, result
        self._wait(lambda: mid in self.unsubacks, f"UNSUBACK for {topic_filter}")

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish at QoS 1 and wait for the broker's PUBACK."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(timeout=TIMEOUT)
        assert info.is_published(), f"no PUBACK for {topic}"

    def wait_for_payload(self, payload: bytes) -> None:
        self._wait(lambda: any(p == payload for _, p in self.messages), f"message {payload!r}")

    def payloads(self) -> list[bytes]:
        with self._cond:
            return [p for _, p in self.messages]

    def received(self, payload: bytes) -> list[str]:
        """The topics ``payload`` arrived on."""
        with self._cond:
            return [t for t, p in self.messages if p == payload]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextlib.contextmanager
def peer(
    port: int,
    username: str | None,
    password: str | None,
    *,
    tls_ca: Path | None = None,
) -> Iterator[Peer]:
    """A connected peer; the connection must be accepted."""
    client = Peer(username or "anonymous")
    try:
        reason = client.connect(port, username, password, tls_ca=tls_ca)
        assert not reason.is_failure, f"{username} refused: {reason}"
        yield client
    finally:
        client.close()


def connack_of(port: int, username: str | None, password: str | None) -> ReasonCode:
    client = Peer(username or "anonymous")
    try:
        return client.connect(port, username, password)
    finally:
        client.close()


# --- fixtures ----------------------------------------------------------------------------


@dataclass
class Fleet:
    broker: Broker
    passwords: dict[str, str]
    peers: dict[str, Peer]  # one connection per service user, and the spy


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    workdir = tmp_path_factory.mktemp("mosquitto")
    passwords = {user: secrets.token_urlsafe(12) for user in (*USERS, SPY)}
    write_password_file(workdir / "passwd", passwords)
    spy_acl = f"\n# test only\nuser {SPY}\ntopic readwrite #\n"
    with (
        run_broker(workdir, workdir / "passwd", extra_acl=spy_acl) as broker,
        contextlib.ExitStack() as stack,
    ):
        peers = {
            user: stack.enter_context(peer(broker.port, user, passwords[user]))
            for user in (*USERS, SPY)
        }
        assert peers[SPY].subscribe("#")[0] == 1
        yield Fleet(broker, passwords, peers)


_case_ids = itertools.count()


def sentinel_topic(user: str, access: str, case_id: int) -> str:
    """A topic ``user`` may use for ``access``, for a message sent after the probe."""
    pattern = GRANTS[user][access][0]
    return pattern.replace("+", f"sentinel-{case_id}").replace("#", "sentinel")


# --- the permission table ----------------------------------------------------------------


def test_probe_table_tries_every_grant() -> None:
    """Every granted filter is exercised by at least one allowed case (the table is complete)."""
    for user, grants in GRANTS.items():
        for access, patterns in grants.items():
            for pattern in patterns:
                assert any(topic_matches_sub(pattern, t.format(id="cp-1")) for t in PROBE_TOPICS), (
                    f"no probe topic for {user} {access} {pattern}"
                )
    assert any(not c.allowed for c in CASES) and any(c.allowed for c in CASES)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_acl(fleet: Fleet, case: Case) -> None:
    """A user publishes or receives a topic exactly when the design grants it.

    Order makes the negative cases exact without sleeping: after the probe, a sentinel
    message that must arrive goes the same way; once the sentinel is in, the probe would be
    too.
    """
    n = next(_case_ids)
    topic = case.template.format(id=f"cp-{n}")
    probe, sentinel = f"probe-{n}".encode(), f"sentinel-{n}".encode()
    user, spy = fleet.peers[case.user], fleet.peers[SPY]

    if case.direction == "publish":
        user.publish(topic, probe)  # a denied publish is acknowledged as well
        user.publish(sentinel_topic(case.user, "write", n), sentinel)
        spy.wait_for_payload(sentinel)
        received = spy.received(probe)
    else:
        shared = case.direction == "receive-shared"
        topic_filter = f"$share/ct-test-{case.user}/{topic}" if shared else topic
        sentinel_at = sentinel_topic(case.user, "read", n)
        granted = user.subscribe(topic_filter)
        user.subscribe(sentinel_at)
        # Mosquitto 2.0 grants every subscription and filters each message at delivery.
        assert [code.value for code in granted] == [1]
        spy.publish(topic, probe)
        spy.publish(sentinel_at, sentinel)
        user.wait_for_payload(sentinel)
        user.unsubscribe(topic_filter)
        user.unsubscribe(sentinel_at)
        received = user.received(probe)

    if case.allowed:
        assert received == [topic], f"{case.user} should be able to {case.direction} {topic}"
    else:
        assert received == [], f"{case.user} must not be able to {case.direction} {topic}"


def test_acl_file_grants_exactly_the_design() -> None:
    """No line beyond the table above: a grant outside the probe topics would go unnoticed."""
    granted: dict[str, dict[str, set[str]]] = {}
    user = None
    for raw in (MOSQUITTO_DIR / "acl").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        words = line.split()
        if words[0] == "user":
            user = words[1]
            granted.setdefault(user, {"read": set(), "write": set()})
            continue
        assert words[0] == "topic", f"unexpected ACL line {raw!r} (patterns apply to all users)"
        assert user is not None, f"{raw!r} would apply to anonymous clients"
        assert len(words) == 3 and words[1] in ("read", "write"), raw
        granted[user][words[1]].add(words[2])
    assert granted == {
        user: {access: set(patterns) for access, patterns in grants.items()}
        for user, grants in GRANTS.items()
    }


# --- the services' flows, with the filters the services use ------------------------------

C = "chargetwin/chargers"
FLOWS = [
    # (publisher, topic, receiver, the filter the receiving service subscribes to)
    ("bridge", f"{C}/ID/shadow/update", "twin", f"$share/twin/{C}/+/shadow/update"),
    ("api", f"{C}/ID/shadow/update", "twin", f"$share/twin/{C}/+/shadow/update"),
    ("rules", f"{C}/ID/shadow/update", "twin", f"$share/twin/{C}/+/shadow/update"),
    ("bridge", f"{C}/ID/shadow/get", "twin", f"$share/twin/{C}/+/shadow/get"),
    ("api", f"{C}/ID/shadow/get", "twin", f"$share/twin/{C}/+/shadow/get"),
    ("bridge", f"{C}/ID/presence", "twin", f"$share/twin/{C}/+/presence"),
    ("bridge", "chargetwin/bridges/ID/status", "twin", "$share/twin/chargetwin/bridges/+/status"),
    ("twin", f"{C}/ID/shadow/update/delta", "bridge", f"{C}/+/shadow/update/delta"),
    ("twin", f"{C}/ID/shadow/update/accepted", "bridge", f"{C}/+/shadow/update/accepted"),
    ("twin", f"{C}/ID/shadow/update/rejected", "api", f"{C}/+/shadow/update/rejected"),
    (
        "twin",
        f"{C}/ID/shadow/update/documents",
        "rules",
        f"$share/rules/{C}/+/shadow/update/documents",
    ),
    ("twin", f"{C}/ID/shadow/get/accepted", "api", f"{C}/+/shadow/get/accepted"),
    ("api", f"{C}/ID/shadow/delete", "twin", f"$share/twin/{C}/+/shadow/delete"),
    ("twin", f"{C}/ID/shadow/delete/accepted", "api", f"{C}/+/shadow/delete/accepted"),
    ("twin", f"{C}/ID/shadow/get/rejected", "bridge", f"{C}/+/shadow/get/rejected"),
    ("bridge", f"{C}/ID/telemetry/meter-values", "rules", f"$share/rules/{C}/+/telemetry/#"),
    ("bridge", f"{C}/ID/events/boot-notification", "rules", f"$share/rules/{C}/+/events/#"),
    ("bridge", f"{C}/ID/presence", "api", f"{C}/+/presence"),
    ("api", f"{C}/ID/commands", "bridge", f"{C}/+/commands"),
    ("rules", f"{C}/ID/commands", "bridge", f"{C}/+/commands"),
    ("bridge", f"{C}/ID/commands/result", "api", f"{C}/+/commands/result"),
    ("bridge", f"{C}/ID/commands/result", "rules", f"$share/rules/{C}/+/commands/result"),
    ("rules", "chargetwin/alerts/ID/raised", "api", "chargetwin/alerts/#"),
    ("api", "chargetwin/fleet/wake", "fleet", "chargetwin/fleet/wake"),
    ("fleet", f"{C}/ID/shadow/update", "twin", f"$share/twin/{C}/+/shadow/update"),
    ("twin", f"{C}/ID/shadow/update/accepted", "fleet", f"{C}/+/shadow/update/accepted"),
]


@pytest.mark.parametrize(
    ("publisher", "template", "receiver", "topic_filter"),
    FLOWS,
    ids=[f"{p}-to-{r}-{t.removeprefix(C + '/ID/')}" for p, t, r, _ in FLOWS],
)
def test_service_flow(
    fleet: Fleet, publisher: str, template: str, receiver: str, topic_filter: str
) -> None:
    """The pairs the services rely on deliver, with the (shared) wildcard filters they use."""
    n = next(_case_ids)
    topic = template.replace("ID", f"cp-{n}")
    payload = f"flow-{n}".encode()
    fleet.peers[receiver].subscribe(topic_filter)
    try:
        fleet.peers[publisher].publish(topic, payload)
        fleet.peers[receiver].wait_for_payload(payload)
    finally:
        fleet.peers[receiver].unsubscribe(topic_filter)
    assert fleet.peers[receiver].received(payload) == [topic]


def test_retained_presence_reaches_late_subscribers(fleet: Fleet) -> None:
    """Presence is retained: a twin, rules or api worker starting later still learns it."""
    n = next(_case_ids)
    topic = f"chargetwin/chargers/cp-{n}/presence"
    payload = f'{{"online": true, "n": {n}}}'.encode()
    fleet.peers["bridge"].publish(topic, payload, retain=True)
    try:
        for user in ("twin", "rules", "api"):
            with peer(fleet.broker.port, user, fleet.passwords[user]) as late:
                late.subscribe("chargetwin/chargers/+/presence")
                late.wait_for_payload(payload)
    finally:
        fleet.peers["bridge"].publish(topic, b"", retain=True)  # clear the retained message


def test_last_will_obeys_the_acl(fleet: Fleet) -> None:
    """The bridge's last will (retained "offline" status) reaches the twin; a will that its
    user may not publish is accepted at CONNECT and then dropped when it would fire."""
    n = next(_case_ids)
    allowed, denied = (f"chargetwin/bridges/b-{n}-{who}/status" for who in ("bridge", "api"))
    twin = fleet.peers["twin"]
    twin.subscribe("chargetwin/bridges/+/status")
    try:
        for user, topic in (("api", denied), ("bridge", allowed)):  # the denied one first
            dying = Peer(user)
            dying.client.will_set(topic, f"offline-{n}-{user}".encode(), qos=1, retain=True)
            assert not dying.connect(fleet.broker.port, user, fleet.passwords[user]).is_failure
            sock = dying.client.socket()
            assert isinstance(sock, socket.socket)
            sock.shutdown(socket.SHUT_RDWR)  # gone without a DISCONNECT
            dying.close()
        twin.wait_for_payload(f"offline-{n}-bridge".encode())
        with peer(fleet.broker.port, "twin", fleet.passwords["twin"]) as late:
            late.subscribe("chargetwin/bridges/+/status")
            late.wait_for_payload(f"offline-{n}-bridge".encode())
            assert late.received(f"offline-{n}-bridge".encode()) == [allowed]  # retained
            assert late.received(f"offline-{n}-api".encode()) == []
        assert twin.received(f"offline-{n}-api".encode()) == []
    finally:
        twin.unsubscribe("chargetwin/bridges/+/status")
        fleet.peers["bridge"].publish(allowed, b"", retain=True)


def test_shared_subscription_spreads_messages_over_workers(fleet: Fleet) -> None:
    """Two twin workers in one $share group: each shadow update reaches exactly one of them."""
    n = next(_case_ids)
    group_filter = f"$share/twin-{n}/chargetwin/chargers/+/shadow/update"
    payloads = [f"update-{n}-{i}".encode() for i in range(20)]
    with (
        peer(fleet.broker.port, "twin", fleet.passwords["twin"]) as first,
        peer(fleet.broker.port, "twin", fleet.passwords["twin"]) as second,
    ):
        first.subscribe(group_filter)
        second.subscribe(group_filter)
        for i, payload in enumerate(payloads):
            fleet.peers["bridge"].publish(f"chargetwin/chargers/cp-{n}-{i}/shadow/update", payload)
        deadline = time.monotonic() + TIMEOUT
        while len(first.payloads()) + len(second.payloads()) < len(payloads):
            assert time.monotonic() < deadline, "shared subscription lost messages"
            time.sleep(0.01)
        got_first, got_second = first.payloads(), second.payloads()
    assert sorted(got_first + got_second) == sorted(payloads)  # each exactly once
    assert got_first and got_second, "the broker should spread the group's messages"


def test_a_group_member_without_read_access_swallows_its_share(fleet: Fleet) -> None:
    """Why share groups are per component: Mosquitto 2.0 picks a member, then applies the ACL.

    A message given to a member that may not read it is dropped, not passed to another
    member. So a group must only hold workers of one user (CHARGETWIN_MQTT_SHARE_GROUP makes
    ``$share/GROUP-component/...``).
    """
    n = next(_case_ids)
    group_filter = f"$share/mixed-{n}/chargetwin/chargers/+/shadow/update"
    payloads = [f"mixed-{n}-{i}".encode() for i in range(10)]
    with (
        peer(fleet.broker.port, "twin", fleet.passwords["twin"]) as twin,
        peer(fleet.broker.port, "rules", fleet.passwords["rules"]) as rules,
    ):
        twin.subscribe(group_filter)
        rules.subscribe(group_filter)
        for i, payload in enumerate(payloads):
            fleet.peers["bridge"].publish(f"chargetwin/chargers/cp-{n}-{i}/shadow/update", payload)
        # The last message goes to twin or to rules; a plain subscription marks the end.
        twin.subscribe(f"chargetwin/chargers/end-{n}/shadow/update")
        fleet.peers["bridge"].publish(f"chargetwin/chargers/end-{n}/shadow/update", b"end")
        twin.wait_for_payload(b"end")
        got = [p for p in twin.payloads() if p != b"end"]
        assert rules.payloads() == []
    assert 0 < len(got) < len(payloads), "some of the group's messages went to rules and were lost"
    assert set(got) < set(payloads)


def test_denied_operations_as_mosquitto_2_answers_them(fleet: Fleet) -> None:
    """Denied publish: PUBACK and dropped. Denied subscribe: granted, then nothing delivered.

    Services therefore cannot learn of a missing grant from the broker: a wrong ACL shows
    only as silence, which is why the table above covers every topic.
    """
    n = next(_case_ids)
    rules, spy = fleet.peers["rules"], fleet.peers[SPY]
    denied = f"chargetwin/chargers/cp-{n}/shadow/update/delta"  # rules may neither read nor write
    allowed = f"chargetwin/chargers/cp-{n}/telemetry/meter-values"
    for topic_filter in ("chargetwin/#", f"$share/ct-test-{n}/chargetwin/#", denied):
        assert [c.value for c in rules.subscribe(topic_filter)] == [1], topic_filter
    rules.publish(denied, b"from-rules")  # acknowledged, dropped
    assert rules.client.is_connected()
    spy.publish(denied, f"denied-{n}".encode())
    spy.publish(allowed, f"allowed-{n}".encode())
    rules.wait_for_payload(f"allowed-{n}".encode())
    spy.wait_for_payload(f"allowed-{n}".encode())
    for topic_filter in ("chargetwin/#", f"$share/ct-test-{n}/chargetwin/#", denied):
        rules.unsubscribe(topic_filter)
    assert rules.received(f"denied-{n}".encode()) == []
    # Overlapping subscriptions of one client: Mosquitto 2.0 delivers a message once.
    assert rules.received(f"allowed-{n}".encode()) == [allowed]
    assert spy.received(b"from-rules") == []


# --- authentication ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("username", "password"),
    [
        (None, None),
        ("bridge", "wrong-password"),
        ("bridge", ""),
        ("nobody", "whatever"),
    ],
    ids=["anonymous", "wrong-password", "empty-password", "unknown-user"],
)
def test_connection_refused(fleet: Fleet, username: str | None, password: str | None) -> None:
    reason = connack_of(fleet.broker.port, username, password)
    assert reason.is_failure
    assert str(reason) == "Not authorized"


@pytest.mark.parametrize("user", USERS)
def test_each_service_user_connects(fleet: Fleet, user: str) -> None:
    assert not connack_of(fleet.broker.port, user, fleet.passwords[user]).is_failure


def test_one_user_cannot_log_in_with_another_users_password(fleet: Fleet) -> None:
    assert connack_of(fleet.broker.port, "api", fleet.passwords["bridge"]).is_failure


# --- the password file helper and the compose credentials ---------------------------------


def env_values(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip().strip("\"'")
    return values


def test_make_passwd_writes_the_compose_credentials(tmp_path: Path) -> None:
    """make-passwd.sh + .env.example give a broker that accepts each service's MQTT URL."""
    passwd = tmp_path / "passwd"
    path = os.pathsep.join([str(Path(str(MOSQUITTO_PASSWD)).parent), os.environ["PATH"]])
    result = subprocess.run(
        ["sh", str(MOSQUITTO_DIR / "make-passwd.sh"), str(REPO / ".env.example"), str(passwd)],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": path},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert passwd.stat().st_mode & 0o077 == 0, "the password file must not be world-readable"
    env = env_values(REPO / ".env.example")
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    urls = {}
    for name in USERS:
        url = services[name]["environment"]["CHARGETWIN_MQTT_URL"]
        url = re.sub(r"\$\{(\w+)[^}]*\}", lambda m: env[m.group(1)], url)
        match = re.fullmatch(r"mqtt://([^:@]+):([^@]+)@mosquitto:1883", url)
        assert match, url
        urls[name] = (match.group(1), match.group(2))
    workdir = tmp_path / "broker"
    workdir.mkdir()
    with run_broker(workdir, passwd) as broker:
        for name, (username, password) in urls.items():
            assert username == name, "each component connects as its own user"
            assert not connack_of(broker.port, username, password).is_failure, name
        assert connack_of(broker.port, "twin", urls["api"][1]).is_failure


def test_sighup_reloads_the_password_file(tmp_path: Path) -> None:
    """The documented way to change a password: rewrite the file, send the broker SIGHUP."""
    passwd = tmp_path / "passwd"
    write_password_file(passwd, {"api": "old-password"})
    workdir = tmp_path / "broker"
    workdir.mkdir()
    with run_broker(workdir, passwd) as broker:
        assert not connack_of(broker.port, "api", "old-password").is_failure
        write_password_file(passwd, {"api": "new-password"})
        broker.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + TIMEOUT
        while not connack_of(broker.port, "api", "old-password").is_failure:
            assert time.monotonic() < deadline, "the broker did not reload its password file"
            time.sleep(0.02)
        assert not connack_of(broker.port, "api", "new-password").is_failure


def test_make_passwd_names_a_missing_password(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("MQTT_BRIDGE_PASSWORD=x\nMQTT_TWIN_PASSWORD=y\nMQTT_API_PASSWORD=z\n")
    result = subprocess.run(
        ["sh", str(MOSQUITTO_DIR / "make-passwd.sh"), str(env), str(tmp_path / "passwd")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "MQTT_RULES_PASSWORD" in result.stderr
    assert not (tmp_path / "passwd").exists()
    assert not list(tmp_path.glob(".passwd*")), "temporary file left behind"


# --- TLS ---------------------------------------------------------------------------------


def make_certificates(folder: Path) -> TlsFiles:
    """A throwaway CA and a server certificate for localhost / 127.0.0.1, with openssl."""
    assert OPENSSL is not None
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run([OPENSSL, *args], cwd=folder, check=True, capture_output=True)

    run(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=ChargeTwin test CA",
    )
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (folder / "server.ext").write_text(
        "basicConstraints = CA:FALSE\n"
        "keyUsage = critical, digitalSignature\n"
        "extendedKeyUsage = serverAuth\n"
        "subjectAltName = DNS:localhost, IP:127.0.0.1\n"
        "subjectKeyIdentifier = hash\n"
        "authorityKeyIdentifier = keyid\n"
    )
    run(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    )
    return TlsFiles(folder / "ca.crt", folder / "server.crt", folder / "server.key")


@pytest.mark.skipif(OPENSSL is None, reason="needs the openssl command to make certificates")
def test_tls_listener(tmp_path: Path) -> None:
    """tls.conf opens 8883 with the same users and ACL; clients verify the server."""
    certs = tmp_path / "certs"
    certs.mkdir()
    tls = make_certificates(certs)
    passwords = {user: secrets.token_urlsafe(12) for user in USERS}
    write_password_file(tmp_path / "passwd", passwords)
    workdir = tmp_path / "broker"
    workdir.mkdir()
    with run_broker(workdir, tmp_path / "passwd", tls=tls) as broker:
        assert broker.tls_port is not None
        port = broker.tls_port
        with (
            peer(port, "twin", passwords["twin"], tls_ca=tls.ca) as twin,
            peer(port, "api", passwords["api"], tls_ca=tls.ca) as api,
        ):
            assert isinstance(twin.client.socket(), ssl.SSLSocket)
            api.subscribe("chargetwin/chargers/+/shadow/get/accepted")
            api.subscribe("chargetwin/chargers/+/shadow/update/documents")  # not api's
            twin.publish("chargetwin/chargers/cp-1/shadow/update/documents", b"documents")
            twin.publish("chargetwin/chargers/cp-1/shadow/get/accepted", b"accepted")
            api.wait_for_payload(b"accepted")
            assert api.payloads() == [b"accepted"], "the ACL applies on the TLS listener too"

        anonymous = Peer("anonymous")
        try:
            assert anonymous.connect(port, None, None, tls_ca=tls.ca).is_failure
        finally:
            anonymous.close()

        # tls_version tlsv1.2 is a minimum: TLS 1.2-only clients and TLS 1.3 both work.
        for highest, expected in (
            (ssl.TLSVersion.TLSv1_2, "TLSv1.2"),
            (ssl.TLSVersion.MAXIMUM_SUPPORTED, "TLSv1.3"),
        ):
            context = ssl.create_default_context(cafile=str(tls.ca))
            context.maximum_version = highest
            with (
                socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw,
                context.wrap_socket(raw, server_hostname="localhost") as wrapped,
            ):
                assert wrapped.version() == expected

        # A client that trusts another CA refuses the broker's certificate.
        (tmp_path / "other").mkdir()
        stranger = make_certificates(tmp_path / "other")
        context = ssl.create_default_context(cafile=str(stranger.ca))
        with (
            socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw,
            pytest.raises(ssl.SSLCertVerificationError),
        ):
            context.wrap_socket(raw, server_hostname="localhost")
