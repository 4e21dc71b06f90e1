"""OCPP security profiles 2 (Basic auth over TLS) and 3 (client certificates).

Certificates are made in the test with the ``openssl`` command: a charger CA, the server's
certificate, chargers' certificates, and a foreign CA whose certificates must not pass.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import PASSWORD, MakeBridge, MqttWatcher, basic, register
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidMessage, InvalidStatus

from bridge import Bridge
from bridge.tls import TlsConfigurationError, TlsFiles, common_name, server_context

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")

CHARGER = "cp-tls-0001"
OTHER = "cp-tls-0002"


def openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


class Pki:
    """A CA in a folder that signs server and charger certificates."""

    def __init__(self, folder: Path, name: str) -> None:
        self.folder = folder
        self.name = name
        self.cert = folder / f"{name}.pem"
        self.key = folder / f"{name}.key"
        openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", self.key, "-out", self.cert, "-days", "2", "-subj", f"/CN={name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip

    def issue(self, cn: str, extensions: str) -> tuple[Path, Path]:
        """A certificate for ``cn`` signed by this CA: (cert, key)."""
        stem = self.folder / f"{self.name}-{cn}"
        key, csr, cert, ext = (stem.with_suffix(s) for s in (".key", ".csr", ".pem", ".ext"))
        ext.write_text(extensions + "\n")
        openssl(
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", key, "-out", csr, "-subj", f"/CN={cn}",
        )  # fmt: skip
        openssl(
            "x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self.key,
            "-CAcreateserial", "-out", cert, "-days", "2", "-extfile", ext,
        )  # fmt: skip
        return cert, key


@dataclass
class Certificates:
    ca: Pki
    server: TlsFiles
    charger: tuple[Path, Path]  # CN = CHARGER, our CA
    other_charger: tuple[Path, Path]  # CN = OTHER, our CA
    foreign: tuple[Path, Path]  # CN = CHARGER, another CA


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    folder = tmp_path_factory.mktemp("pki")
    ca = Pki(folder, "charger-ca")
    cert, key = ca.issue(
        "127.0.0.1", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth"
    )
    client = "extendedKeyUsage=clientAuth"
    foreign = Pki(folder, "foreign-ca")
    return Certificates(
        ca=ca,
        server=TlsFiles(cert, key, ca.cert),
        charger=ca.issue(CHARGER, client),
        other_charger=ca.issue(OTHER, client),
        foreign=foreign.issue(CHARGER, client),
    )


def client_context(certs: Certificates, client: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=certs.ca.cert)
    if client is not None:
        context.load_cert_chain(*client)
    return context


def wss(bridge: Bridge, charger_id: str) -> str:
    return f"wss://127.0.0.1:{bridge.port}/ocpp/{charger_id}"


async def heartbeat(url: str, context: ssl.SSLContext, headers: dict[str, str]) -> str:
    """Connect, send one BootNotification (a new charger's first call), return the answer."""
    async with connect(
        url,
        ssl=context,
        subprotocols=["ocpp1.6"],
        additional_headers=headers,  # type: ignore[list-item]
    ) as ws:
        await ws.send(
            '[2,"b-1","BootNotification",{"chargePointVendor":"V","chargePointModel":"M"}]'
        )
        answer = await ws.recv()
        return str(answer)


# --- profile 2: TLS + Basic auth ---------------------------------------------------------
@pytest.fixture
async def profile2(
    make_bridge: MakeBridge, watcher: MqttWatcher, certificates: Certificates
) -> Bridge:
    files = TlsFiles(certificates.server.cert, certificates.server.key)
    bridge = await make_bridge(tls=files)
    await register(bridge, CHARGER)
    return bridge


async def test_profile2_charger_with_password_connects_over_tls(
    profile2: Bridge, certificates: Certificates
) -> None:
    answer = await heartbeat(
        wss(profile2, CHARGER), client_context(certificates), basic(CHARGER, PASSWORD)
    )
    assert answer.startswith('[3,"b-1",{"currentTime"')


async def test_profile2_without_password_is_401(
    profile2: Bridge, certificates: Certificates
) -> None:
    with pytest.raises(InvalidStatus) as info:
        await heartbeat(wss(profile2, CHARGER), client_context(certificates), {})
    assert info.value.response.status_code == 401


async def test_profile2_refuses_plain_websockets(profile2: Bridge) -> None:
    with pytest.raises(Exception):  # noqa: B017  # the server speaks TLS only
        async with connect(
            f"ws://127.0.0.1:{profile2.port}/ocpp/{CHARGER}",
            subprotocols=["ocpp1.6"],  # type: ignore[list-item]
            additional_headers=basic(CHARGER, PASSWORD),
            open_timeout=3,
        ):
            pass


async def test_profile2_refuses_tls_below_1_2(profile2: Bridge, certificates: Certificates) -> None:
    context = client_context(certificates)
    with warnings.catch_warnings():  # TLS 1.0/1.1 are deprecated: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("ALL:@SECLEVEL=0")
    with pytest.raises((ssl.SSLError, OSError)):
        await heartbeat(wss(profile2, CHARGER), context, basic(CHARGER, PASSWORD))


# --- profile 3: client certificates ------------------------------------------------------
@pytest.fixture
async def profile3(
    make_bridge: MakeBridge, watcher: MqttWatcher, certificates: Certificates
) -> Bridge:
    bridge = await make_bridge(tls=certificates.server)
    assert bridge.db is not None
    await register(bridge, CHARGER)
    await register(bridge, OTHER)
    return bridge


async def test_profile3_charger_with_its_certificate_connects_without_password(
    profile3: Bridge, certificates: Certificates, watcher: MqttWatcher
) -> None:
    context = client_context(certificates, certificates.charger)
    answer = await heartbeat(wss(profile3, CHARGER), context, {})
    assert answer.startswith('[3,"b-1",{"currentTime"')
    presence = f"{profile3.topics.prefix}/chargers/{CHARGER}/presence"
    await watcher.wait_for(presence, lambda p: p and p["online"])


async def test_profile3_certificate_of_another_charger_is_403(
    profile3: Bridge, certificates: Certificates
) -> None:
    context = client_context(certificates, certificates.other_charger)
    with pytest.raises(InvalidStatus) as info:
        await heartbeat(wss(profile3, CHARGER), context, basic(CHARGER, PASSWORD))
    assert info.value.response.status_code == 403
    assert b"certificate is for 'cp-tls-0002'" in info.value.response.body


async def test_profile3_unregistered_charger_is_403(
    make_bridge: MakeBridge, watcher: MqttWatcher, certificates: Certificates
) -> None:
    bridge = await make_bridge(tls=certificates.server)
    context = client_context(certificates, certificates.charger)
    with pytest.raises(InvalidStatus) as info:
        await heartbeat(wss(bridge, CHARGER), context, {})
    assert info.value.response.status_code == 403


async def test_profile3_auto_register_trusts_the_certificate(
    make_bridge: MakeBridge, watcher: MqttWatcher, certificates: Certificates
) -> None:
    bridge = await make_bridge(tls=certificates.server, auto_register=True)
    context = client_context(certificates, certificates.charger)
    assert (await heartbeat(wss(bridge, CHARGER), context, {})).startswith("[3,")
    assert bridge.db is not None
    assert await bridge.db.fetchone("SELECT 1 FROM chargers WHERE charger_id = ?", (CHARGER,))


@pytest.mark.parametrize("case", ["foreign CA", "no certificate"])
async def test_profile3_refuses_at_the_tls_handshake(
    profile3: Bridge, certificates: Certificates, case: str
) -> None:
    client = certificates.foreign if case == "foreign CA" else None
    context = client_context(certificates, client)
    # TLS 1.3: the client's handshake ends before the server checks its certificate, so
    # the refusal (a TLS alert) shows up as the HTTP response that never comes.
    with pytest.raises((ssl.SSLError, OSError, InvalidMessage)) as info:
        await heartbeat(wss(profile3, CHARGER), context, basic(CHARGER, PASSWORD))
    assert not isinstance(info.value, InvalidStatus)


# --- pure pieces --------------------------------------------------------------------------
def test_server_context_is_tls12_minimum_and_requires_client_certs_for_profile3(
    certificates: Certificates,
) -> None:
    context = server_context(certificates.server)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert certificates.server.profile == 3
    files = TlsFiles(certificates.server.cert, certificates.server.key)
    assert server_context(files).verify_mode == ssl.CERT_NONE
    assert files.profile == 2


def test_unreadable_files_are_a_configuration_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    with pytest.raises(TlsConfigurationError, match=r"missing\.pem"):
        server_context(TlsFiles(missing, missing))


def test_common_name() -> None:
    subject = ((("countryName", "DE"),), (("commonName", "cp-1"),))
    assert common_name({"subject": subject}) == "cp-1"
    assert common_name({"subject": ()}) is None
    assert common_name(None) is None
    assert common_name(str(uuid.uuid4())) is None
