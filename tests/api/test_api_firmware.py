"""The firmware catalog over HTTP: uploads, external URLs, downloads, the fit check, delete."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_helpers import ADMIN_ENV_TOKEN, assert_problem, free_port
from fastapi import FastAPI
from pydantic import SecretStr

from api.app import serve
from api.backends import Backend
from chargetwin.database import Database
from chargetwin.mqtt import MqttClient
from chargetwin.topics import Topics
from twin.catalog import version_key
from twin.service import ShadowService

IMAGE = b"firmware-image-" * 1000
SHA = hashlib.sha256(IMAGE).hexdigest()
Auth = Callable[[str], dict[str, str]]


@pytest.fixture
async def backend(db: Database, api_mqtt: MqttClient, topics: Topics, tmp_path: Path) -> Backend:
    backend = Backend.build(
        db,
        api_mqtt,
        topics,
        admin_token=SecretStr(ADMIN_ENV_TOKEN),
        twin_timeout=3.0,
        data_dir=tmp_path,
        public_url="http://chargers.example:8000",
    )
    await backend.create_schema()
    return backend


async def upload(
    client: httpx.AsyncClient, auth: Auth, version: str = "1.5.0", data: bytes = IMAGE, **extra: str
) -> httpx.Response:
    fields = {"vendor": "ChargeTwin", "model": "CT-AC22", "version": version, **extra}
    return await client.post(
        "/api/v1/firmware",
        data=fields,
        files={"file": ("fw.bin", data, "application/octet-stream")},
        headers=auth("operator"),
    )


async def stored_bytes(backend: Backend, sha256: str) -> bytes | None:
    """The image as the API's file store holds it (data directory or database)."""
    assert backend.operations is not None
    files = backend.operations.files
    stored = await files.stat("firmware", sha256)
    return None if stored is None else b"".join([c async for c in files.read(stored)])


async def test_upload_list_get_and_download_without_a_token(
    client: httpx.AsyncClient, auth: Auth, backend: Backend
) -> None:
    answer = await upload(client, auth, notes="Fixes the RFID reader")
    assert answer.status_code == 201, answer.text
    image = answer.json()
    assert (image["sha256"], image["size"], image["source"]) == (SHA, len(IMAGE), "upload")
    assert image["downloadUrl"] == (
        f"http://chargers.example:8000/api/v1/firmware/files/{SHA}?sha256={SHA}&version=1.5.0"
    )
    assert answer.headers["Location"] == f"/api/v1/firmware/{image['id']}"
    assert await stored_bytes(backend, SHA) == IMAGE

    assert (await upload(client, auth, "1.10.0", IMAGE + b"x")).status_code == 201
    assert (await upload(client, auth, "1.9.1", IMAGE + b"y")).status_code == 201
    listed = await client.get(
        "/api/v1/firmware", params={"vendor": "ChargeTwin"}, headers=auth("viewer")
    )
    assert [i["version"] for i in listed.json()] == ["1.10.0", "1.9.1", "1.5.0"]
    other = await client.get("/api/v1/firmware", params={"model": "X"}, headers=auth("viewer"))
    assert other.json() == []
    one = await client.get(f"/api/v1/firmware/{image['id']}", headers=auth("viewer"))
    assert one.json()["notes"] == "Fixes the RFID reader"

    path = f"/api/v1/firmware/files/{SHA}"
    download = await client.get(path, params={"sha256": SHA, "version": "1.5.0"})
    assert download.status_code == 200 and download.content == IMAGE
    head = await client.head(path)
    assert head.status_code == 200 and int(head.headers["content-length"]) == len(IMAGE)
    part = await client.get(path, headers={"Range": "bytes=0-9"})
    assert part.status_code == 206 and part.content == IMAGE[:10]
    assert_problem(await client.get(f"/api/v1/firmware/files/{'0' * 64}"), 404)
    assert_problem(await client.get("/api/v1/firmware/files/..%2F..%2Fetc"), 404)


async def test_duplicates_roles_and_bad_uploads_are_refused(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    assert (await upload(client, auth)).status_code == 201
    body = assert_problem(await upload(client, auth, data=b"other"), 409)
    assert "1.5.0" in body["detail"]
    forbidden = await client.post(
        "/api/v1/firmware",
        data={"vendor": "V", "model": "M", "version": "1"},
        files={"file": ("fw.bin", b"x")},
        headers=auth("viewer"),
    )
    assert_problem(forbidden, 403)
    missing = await client.post(
        "/api/v1/firmware",
        data={"vendor": "V", "model": "M"},
        files={"file": ("fw.bin", b"x")},
        headers=auth("operator"),
    )
    assert assert_problem(missing, 422)["errors"][0]["pointer"] == "/version"
    no_file = await client.post(
        "/api/v1/firmware",
        data={"vendor": "V", "model": "M", "version": "1"},
        files={"other": ("x", b"x")},
        headers=auth("operator"),
    )
    assert_problem(no_file, 422)
    text = await client.post(
        "/api/v1/firmware", content=b"x", headers={**auth("operator"), "Content-Type": "text/plain"}
    )
    assert_problem(text, 415)


@pytest.fixture
async def served(app: FastAPI) -> AsyncIterator[str]:
    """The same app on a real socket, so the API can download from itself."""
    port = free_port()
    stop = asyncio.Event()
    task = asyncio.create_task(serve(app, "127.0.0.1", port, stop))
    async with httpx.AsyncClient() as probe:
        for _ in range(100):
            try:
                await probe.get(f"http://127.0.0.1:{port}/api/v1/health")
                break
            except httpx.TransportError:
                await asyncio.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    stop.set()
    await task


async def test_external_urls_are_trusted_or_verified(
    client: httpx.AsyncClient, auth: Auth, served: str
) -> None:
    assert (await upload(client, auth)).status_code == 201
    url = f"{served}/api/v1/firmware/files/{SHA}"

    def body(version: str, **extra: Any) -> dict[str, Any]:
        return {"vendor": "Voltaro", "model": "VX-11", "version": version, "url": url, **extra}

    async def post(json: dict[str, Any]) -> httpx.Response:
        return await client.post("/api/v1/firmware", json=json, headers=auth("operator"))

    trusted = await post(body("3.1.0", sha256="a" * 64))
    assert trusted.status_code == 201, trusted.text
    assert trusted.json()["downloadUrl"] == f"{url}?sha256={'a' * 64}&version=3.1.0"
    verified = await post(body("3.2.0", verify=True))
    assert verified.status_code == 201, verified.text
    assert (verified.json()["sha256"], verified.json()["size"]) == (SHA, len(IMAGE))
    mismatch = assert_problem(await post(body("3.3.0", verify=True, sha256="b" * 64)), 422)
    assert SHA in mismatch["detail"]
    assert_problem(await post(body("3.4.0")), 422)  # neither sha256 nor verify
    gone = body("3.5.0", verify=True, url=f"http://127.0.0.1:{free_port()}/x.bin")
    assert_problem(await post(gone), 502)
    assert_problem(await post({**body("3.6.0", sha256="a" * 64), "colour": "red"}), 422)


async def test_desired_firmware_must_fit_and_pins_its_image(
    client: httpx.AsyncClient,
    auth: Auth,
    twin: ShadowService,
    backend: Backend,
    register: Callable[..., Awaitable[dict[str, Any]]],
) -> None:
    image = (await upload(client, auth)).json()
    await register("CP-FW-1")
    await register("CP-FW-2")

    async def want(charger_id: str, version: str | None) -> httpx.Response:
        return await client.patch(
            f"/api/v1/chargers/{charger_id}/shadow/desired",
            json={"firmware": {"version": version} if version else None},
            headers={**auth("operator"), "Content-Type": "application/merge-patch+json"},
        )

    never_booted = assert_problem(await want("CP-FW-1", "1.5.0"), 422)
    assert "vendor and model" in never_booted["detail"]
    for charger_id, model in (("CP-FW-1", "CT-AC22"), ("CP-FW-2", "VX-11")):
        boot = {"chargePoint": {"vendor": "ChargeTwin", "model": model}}
        await backend.shadow_client.update(charger_id, {"reported": boot})

    assert (await want("CP-FW-1", "1.5.0")).status_code == 200
    misfit = assert_problem(await want("CP-FW-2", "1.5.0"), 422)
    assert misfit["type"] == "urn:chargetwin:problem:firmware-does-not-fit"
    assert "ChargeTwin VX-11" in misfit["detail"]
    assert misfit["errors"] == [
        {"pointer": "/desired/firmware/version", "message": misfit["detail"]}
    ]
    unknown = assert_problem(await want("CP-FW-1", "7.0"), 422)
    assert "catalog versions: 1.5.0" in unknown["detail"]
    audit = (await client.get("/api/v1/chargers/CP-FW-2/audit", headers=auth("viewer"))).json()
    assert audit[0]["outcome"] == "invalid"

    in_use = await client.delete(f"/api/v1/firmware/{image['id']}", headers=auth("admin"))
    assert "CP-FW-1" in assert_problem(in_use, 409)["detail"]
    operator = await client.delete(f"/api/v1/firmware/{image['id']}", headers=auth("operator"))
    assert_problem(operator, 403)
    assert (await want("CP-FW-1", None)).status_code == 200
    deleted = await client.delete(f"/api/v1/firmware/{image['id']}", headers=auth("admin"))
    assert deleted.status_code == 204
    assert await stored_bytes(backend, SHA) is None
    gone = await client.get(f"/api/v1/firmware/{image['id']}", headers=auth("viewer"))
    assert_problem(gone, 404)


def test_latest_is_pep440_then_natural_order() -> None:
    versions = ["1.10.0", "1.9.0", "1.10.0rc1", "fw-9", "fw-10", "2.0"]
    ordered = sorted(versions, key=version_key, reverse=True)
    assert ordered == ["2.0", "1.10.0", "1.10.0rc1", "1.9.0", "fw-10", "fw-9"]
