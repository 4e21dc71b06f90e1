"""Diagnostics over FTP: a real FTP client (Python's ftplib) uploads with the one-time
grant in the location get-diagnostics gives, and the HTTP API lists and serves the file."""

from __future__ import annotations

import asyncio
import ftplib
import io
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from api_helpers import ADMIN_ENV_TOKEN, assert_problem
from probes import MqttProbe
from pydantic import SecretStr, ValidationError

from api.backends import Backend
from api.ftp_uploads import FtpUploads, ftp_location
from chargetwin.database import Database
from chargetwin.mqtt import MqttClient
from chargetwin.settings import Settings
from chargetwin.topics import Topics
from twin.service import ShadowService

Auth = Callable[[str], dict[str, str]]
LIMIT = 64 * 1024


@pytest.fixture
async def backend(db: Database, api_mqtt: MqttClient, topics: Topics, tmp_path: Path) -> Backend:
    backend = Backend.build(
        db, api_mqtt, topics, admin_token=SecretStr(ADMIN_ENV_TOKEN), data_dir=tmp_path,
        public_url="http://127.0.0.1:8000", command_timeout=2.0,
        ftp_models=("Voltaro/VX-FTP",),
    )  # fmt: skip
    await backend.create_schema()
    return backend


@pytest.fixture
async def ftp(backend: Backend) -> AsyncIterator[FtpUploads]:
    assert backend.operations is not None
    endpoint = FtpUploads(backend.operations.uploads, "127.0.0.1", 0, max_bytes=LIMIT)
    backend.operations.ftp_port = endpoint.start()
    yield endpoint
    endpoint.stop()


async def _diagnostics_accepted(probe: MqttProbe, command: str, request: dict[str, Any]) -> None:
    """Answer a get-diagnostics command as the bridge does for a charger that accepted it."""
    result = {"clientToken": request["clientToken"], "name": request["name"],
              "status": "ok", "response": {"fileName": "d.log"}}  # fmt: skip
    await probe.publish(f"{command}/result", result)


def _store(location: str, name: str, data: bytes) -> None:
    """What a charger does with an ftp:// location: log in with its userinfo, STOR."""
    parts = urlsplit(location)
    with ftplib.FTP() as client:
        client.connect(parts.hostname or "", parts.port or 21, timeout=10)
        client.login(parts.username or "", parts.password or "")
        client.storbinary(f"STOR {name}", io.BytesIO(data))


async def test_a_charger_uploads_over_ftp_and_the_api_serves_it(
    client: httpx.AsyncClient,
    auth: Auth,
    backend: Backend,
    ftp: FtpUploads,
    register: Callable[..., Awaitable[dict[str, Any]]],
) -> None:
    await register("CP-FTP-1")
    assert backend.operations is not None
    token = await backend.operations.uploads.grant("CP-FTP-1")
    location = ftp_location("127.0.0.1", ftp.port, "CP-FTP-1", token)

    await asyncio.to_thread(_store, location, "diag-1.log", b"ftp line 1\n")

    async def listed() -> list[str]:
        answer = await client.get("/api/v1/chargers/CP-FTP-1/diagnostics", headers=auth("viewer"))
        return [f["name"] for f in answer.json()]

    assert await listed() == ["diag-1.log"]
    download = await client.get(
        "/api/v1/chargers/CP-FTP-1/diagnostics/diag-1.log", headers=auth("operator")
    )
    assert download.status_code == 200 and download.content == b"ftp line 1\n"
    # The grant is spent: the same credentials log in no more.
    with pytest.raises(ftplib.error_perm, match="530"):
        await asyncio.to_thread(_store, location, "diag-2.log", b"again")
    assert await listed() == ["diag-1.log"]


async def test_wrong_credentials_and_oversized_files_are_refused(
    backend: Backend, ftp: FtpUploads, register: Callable[..., Awaitable[dict[str, Any]]]
) -> None:
    await register("CP-FTP-2")
    assert backend.operations is not None
    uploads = backend.operations.uploads
    token = await uploads.grant("CP-FTP-2")
    for user, password in (("CP-FTP-3", token), ("CP-FTP-2", "not-the-token"), ("..", token)):
        with pytest.raises(ftplib.error_perm, match="530"):
            await asyncio.to_thread(
                _store, ftp_location("127.0.0.1", ftp.port, user, password), "x.log", b"x"
            )
    with pytest.raises(ftplib.Error):
        await asyncio.to_thread(
            _store, ftp_location("127.0.0.1", ftp.port, "CP-FTP-2", token), "big.log",
            b"x" * (LIMIT + 1),
        )  # fmt: skip
    assert await uploads.list("CP-FTP-2") == []
    assert await uploads.check("CP-FTP-2", token)  # not spent by the refused file


@pytest.fixture
def server_tls(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    cert, key = tmp_path / "ftp.pem", tmp_path / "ftp.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def _store_tls(location: str, name: str, data: bytes, cafile: Path, *, private: bool) -> None:
    """What a charger does with an ftps:// location: AUTH TLS, log in, PROT P, STOR."""
    parts = urlsplit(location)
    assert parts.scheme == "ftps"
    with ftplib.FTP_TLS(context=ssl.create_default_context(cafile=str(cafile))) as client:
        client.connect(parts.hostname or "", parts.port or 21, timeout=10)
        client.login(parts.username or "", parts.password or "")  # AUTH TLS first
        if private:
            client.prot_p()
        client.storbinary(f"STOR {name}", io.BytesIO(data))


async def test_with_a_certificate_the_endpoint_is_ftps_and_takes_nothing_in_clear(
    client: httpx.AsyncClient,
    auth: Auth,
    backend: Backend,
    server_tls: tuple[Path, Path],
    online_ftp_charger: str,
    mosquitto_url: str,
    topics: Topics,
) -> None:
    operations = backend.operations
    assert operations is not None
    endpoint = FtpUploads(operations.uploads, "127.0.0.1", 0, max_bytes=LIMIT, tls=server_tls)
    operations.ftp_port, operations.ftp_tls = endpoint.start(), True
    probe = MqttProbe(mosquitto_url)
    try:
        await probe.subscribe(topics.command(online_ftp_charger))
        url = f"/api/v1/chargers/{online_ftp_charger}/commands/get-diagnostics"
        call = asyncio.create_task(client.post(url, json={}, headers=auth("operator")))
        request = await probe.expect(topics.command(online_ftp_charger))
        location = request["payload"]["location"]
        assert location.startswith(f"ftps://{online_ftp_charger}:")
        await _diagnostics_accepted(probe, topics.command(online_ftp_charger), request)
        assert (await call).status_code == 200

        # The grant in clear is refused before it is looked at, and stays unspent.
        in_clear = location.replace("ftps://", "ftp://", 1)
        with pytest.raises(ftplib.error_perm, match="SSL/TLS required"):
            await asyncio.to_thread(_store, in_clear, "clear.log", b"x")
        # So is a file over a data channel in clear.
        with pytest.raises(ftplib.error_perm, match="SSL/TLS required"):
            await asyncio.to_thread(
                _store_tls, location, "clear.log", b"x", server_tls[0], private=False
            )
        await asyncio.to_thread(
            _store_tls, location, "over-tls.log", b"over TLS\n", server_tls[0], private=True
        )
    finally:
        probe.close()
        endpoint.stop()
    download = await client.get(
        f"/api/v1/chargers/{online_ftp_charger}/diagnostics/over-tls.log", headers=auth("operator")
    )
    assert download.status_code == 200 and download.content == b"over TLS\n"
    assert [f.name for f in await operations.uploads.list(online_ftp_charger)] == ["over-tls.log"]


@pytest.mark.parametrize("given", ["ftp_tls_cert", "ftp_tls_key"])
def test_the_ftps_certificate_and_key_go_together(given: str) -> None:
    with pytest.raises(ValidationError) as info:
        Settings(**{given: "x.pem"})  # type: ignore[arg-type]
    assert [e["loc"][0] for e in info.value.errors()] == ["ftp_tls_key"]


async def test_an_unreadable_certificate_stops_the_ftps_start(
    backend: Backend, tmp_path: Path
) -> None:
    assert backend.operations is not None
    missing = (tmp_path / "none.pem", tmp_path / "none.key")
    endpoint = FtpUploads(backend.operations.uploads, "127.0.0.1", 0, tls=missing)
    with pytest.raises(FileNotFoundError):
        endpoint.start()
    endpoint.stop()


@pytest.fixture
async def online_ftp_charger(
    twin: ShadowService, backend: Backend, register: Callable[..., Awaitable[dict[str, Any]]]
) -> str:
    await register("CP-FTP-4")
    reported = {
        "connection": {"online": True},
        "chargePoint": {"vendor": "Voltaro", "model": "VX-FTP"},
    }
    await backend.shadow_client.update("CP-FTP-4", {"reported": reported})
    return "CP-FTP-4"


async def test_get_diagnostics_sends_ftp_models_to_the_ftp_endpoint(
    client: httpx.AsyncClient,
    auth: Auth,
    backend: Backend,
    ftp: FtpUploads,
    online_ftp_charger: str,
    mosquitto_url: str,
    topics: Topics,
) -> None:
    probe = MqttProbe(mosquitto_url)
    await probe.subscribe(topics.command(online_ftp_charger))
    url = f"/api/v1/chargers/{online_ftp_charger}/commands/get-diagnostics"
    locations: dict[str, str] = {}
    try:
        for body, scheme in (({}, "ftp"), ({"protocol": "http"}, "http")):
            call = asyncio.create_task(client.post(url, json=body, headers=auth("operator")))
            request = await probe.expect(topics.command(online_ftp_charger))
            assert urlsplit(request["payload"]["location"]).scheme == scheme
            assert "protocol" not in request["payload"]  # ours, not an OCPP field
            locations[scheme] = request["payload"]["location"]
            await _diagnostics_accepted(probe, topics.command(online_ftp_charger), request)
            assert (await call).status_code == 200
    finally:
        probe.close()
    # The ftp:// location works with a real FTP client, as the charger would use it.
    await asyncio.to_thread(_store, locations["ftp"], "from-command.log", b"via get-diagnostics")
    assert backend.operations is not None
    names = [f.name for f in await backend.operations.uploads.list(online_ftp_charger)]
    assert names == ["from-command.log"]
    backend.operations.ftp_port = 0  # an API without FTP refuses to promise it
    refused = await client.post(url, json={"protocol": "ftp"}, headers=auth("operator"))
    assert assert_problem(refused, 422)["errors"][0]["pointer"] == "/protocol"


async def test_a_charger_that_refuses_one_protocol_is_asked_with_the_other(
    client: httpx.AsyncClient,
    auth: Auth,
    ftp: FtpUploads,
    online_ftp_charger: str,
    mosquitto_url: str,
    topics: Topics,
) -> None:
    probe = MqttProbe(mosquitto_url)
    await probe.subscribe(topics.command(online_ftp_charger))
    url = f"/api/v1/chargers/{online_ftp_charger}/commands/get-diagnostics"
    result_topic = f"{topics.command(online_ftp_charger)}/result"
    try:
        call = asyncio.create_task(client.post(url, json={}, headers=auth("operator")))
        first = await probe.expect(topics.command(online_ftp_charger))
        assert urlsplit(first["payload"]["location"]).scheme == "ftp"  # its model's default
        await probe.publish(
            result_topic,
            {"clientToken": first["clientToken"], "name": first["name"], "status": "error",
             "code": 502, "message": "NotSupported: Unsupported protocol",
             "ocppError": "NotSupported"},
        )  # fmt: skip
        second = await probe.expect(topics.command(online_ftp_charger))
        assert urlsplit(second["payload"]["location"]).scheme == "http"
        await probe.publish(
            result_topic,
            {"clientToken": second["clientToken"], "name": second["name"], "status": "ok",
             "response": {"fileName": "d.log"}},
        )  # fmt: skip
        answer = await call
    finally:
        probe.close()
    assert answer.status_code == 200, answer.text
    audit = (
        await client.get(f"/api/v1/chargers/{online_ftp_charger}/audit", headers=auth("viewer"))
    ).json()
    tries = [(e["outcome"], e["patch"]["location"]) for e in reversed(audit)]
    assert [o for o, _ in tries] == ["rejected", "accepted"]
    assert "ftp" in tries[0][1] and "http" in tries[1][1]


async def test_a_2_0_1_station_gets_get_log_with_the_same_second_try(
    client: httpx.AsyncClient,
    auth: Auth,
    ftp: FtpUploads,
    online_ftp_charger: str,
    backend: Backend,
    mosquitto_url: str,
    topics: Topics,
) -> None:
    """The FTP default and the other protocol's second try hold for GetLog too, with one
    requestId for both tries (docs/ocpp201.md, Commands)."""
    station = online_ftp_charger
    await backend.shadow_client.update(
        station, {"reported": {"connection": {"online": True, "ocppVersion": "2.0.1"}}}
    )
    probe = MqttProbe(mosquitto_url)
    await probe.subscribe(topics.command(station))
    url = f"/api/v1/chargers/{station}/commands/get-diagnostics"
    result_topic = f"{topics.command(station)}/result"
    try:
        call = asyncio.create_task(client.post(url, json={}, headers=auth("operator")))
        first = await probe.expect(topics.command(station))
        assert first["payload"]["logType"] == "DiagnosticsLog"
        assert urlsplit(first["payload"]["log"]["remoteLocation"]).scheme == "ftp"
        await probe.publish(
            result_topic,
            {"clientToken": first["clientToken"], "name": first["name"], "status": "error",
             "code": 502, "message": "NotSupported: Unsupported protocol",
             "ocppError": "NotSupported"},
        )  # fmt: skip
        second = await probe.expect(topics.command(station))
        assert urlsplit(second["payload"]["log"]["remoteLocation"]).scheme == "http"
        assert second["payload"]["requestId"] == first["payload"]["requestId"]
        await probe.publish(
            result_topic,
            {"clientToken": second["clientToken"], "name": second["name"], "status": "ok",
             "response": {"status": "Accepted", "filename": "d.log"}},
        )  # fmt: skip
        answer = await call
    finally:
        probe.close()
    assert answer.status_code == 200, answer.text
    assert answer.json()["response"] == {"status": "Accepted", "filename": "d.log"}
