"""Every integer and moment the API takes is bounded: out of range is a 422 naming the
parameter, never a 500 from a store that cannot hold it."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from api_helpers import assert_problem
from fastapi import FastAPI

Headers = Callable[[str], dict[str, str]]
TOO_BIG = 2**63  # one past SQLite's and PostgreSQL's largest integer


@pytest.mark.parametrize(
    "path", ["/id-tags", "/sessions", "/sessions.csv", "/work-orders", "/chargers"]
)
async def test_an_offset_beyond_64_bits_is_a_422(
    client: httpx.AsyncClient, auth: Headers, path: str
) -> None:
    response = await client.get(f"/api/v1{path}?offset={TOO_BIG}", headers=auth("admin"))
    problem = assert_problem(response, 422)
    assert [e["parameter"] for e in problem["errors"]] == ["offset"]


@pytest.mark.parametrize(
    "query",
    [
        "kpis?to=2300-01-01T00:00:00Z",  # past the nanosecond integers of the series store
        "kpis?from=0001-01-01T00:00:00Z",
        "sessions?to=9999-12-31T23:59:59Z",
        "sessions?from=0.5",  # a number is not an RFC 3339 date-time
        "sessions.csv?to=1e9",
        "work-orders?from=1969-12-31T23:59:59Z",
    ],
)
async def test_moments_outside_1970_to_2200_or_not_rfc3339_are_a_422(
    client: httpx.AsyncClient, auth: Headers, query: str
) -> None:
    response = await client.get(f"/api/v1/{query}", headers=auth("admin"))
    problem = assert_problem(response, 422)
    assert problem["errors"][0]["parameter"] in ("from", "to")


async def test_moments_in_bodies_are_bounded_too(client: httpx.AsyncClient, auth: Headers) -> None:
    for expiry in (0, "9999-12-31T23:59:59Z", "soon"):
        response = await client.put(
            "/api/v1/id-tags/TAG-1", json={"expiry": expiry}, headers=auth("operator")
        )
        problem = assert_problem(response, 422)
        assert problem["errors"][0]["pointer"] == "/expiry"
    accepted = await client.put(
        "/api/v1/id-tags/TAG-1", json={"expiry": "2199-01-01T00:00:00Z"}, headers=auth("operator")
    )
    assert accepted.status_code in (200, 201), accepted.text


async def test_a_moment_within_range_is_accepted(client: httpx.AsyncClient, auth: Headers) -> None:
    response = await client.get(
        "/api/v1/sessions?from=2026-01-01T00:00:00Z&to=2026-02-01", headers=auth("admin")
    )
    assert response.status_code == 200, response.text


async def test_a_firmware_size_beyond_1_tib_is_a_422(
    client: httpx.AsyncClient, auth: Headers
) -> None:
    body = {"vendor": "V", "model": "M", "version": "1", "url": "https://x.test/a.bin"}
    body |= {"sha256": "ab" * 32, "size": 2**41}
    response = await client.post("/api/v1/firmware", json=body, headers=auth("operator"))
    assert assert_problem(response, 422)["errors"][0]["pointer"] == "/size"
    body["size"] = TOO_BIG  # not even strict JSON (beyond 64 bits)
    response = await client.post("/api/v1/firmware", json=body, headers=auth("operator"))
    assert_problem(response, 400)


@pytest.mark.parametrize(
    "body", [b'{"vendor": ' * 5_000 + b"1" + b"}" * 5_000, b'{"size": NaN}', b'{"v": "\\ud800"}']
)
async def test_hostile_json_registering_a_firmware_url_is_a_400(
    client: httpx.AsyncClient, auth: Headers, body: bytes
) -> None:
    headers = {**auth("operator"), "Content-Type": "application/json"}
    response = await client.post("/api/v1/firmware", content=body, headers=headers)
    assert assert_problem(response, 400)["type"].endswith("malformed-json")


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 5_000 + b"]" * 5_000,
        b'{"id": "CP-1", "password": "\\ud800-long-enough"}',
        b'{"id": "CP-1", "password": "long-enough", "site": "\\udfff"}',
        b'{"id": "CP-1", "password": "long-enough", "tags": [NaN]}',
    ],
)
async def test_hostile_json_in_a_model_body_is_a_4xx(
    client: httpx.AsyncClient, auth: Headers, body: bytes
) -> None:
    headers = {**auth("admin"), "Content-Type": "application/json"}
    response = await client.post("/api/v1/chargers", content=body, headers=headers)
    assert response.status_code in (400, 422), response.text


@pytest.mark.parametrize(
    "url", ["http://]x/a.bin", "https://h:99999/a.bin", "http://", "http://h\x1fx/a", "http://é/a"]
)
async def test_a_firmware_url_that_does_not_split_is_a_422_and_the_catalog_still_lists(
    client: httpx.AsyncClient, auth: Headers, url: str
) -> None:
    body = {"vendor": "V", "model": "M", "version": "1", "url": url, "sha256": "ab" * 32}
    response = await client.post("/api/v1/firmware", json=body, headers=auth("operator"))
    assert assert_problem(response, 422)["errors"][0]["pointer"] == "/url"
    listing = await client.get("/api/v1/firmware", headers=auth("viewer"))
    assert listing.status_code == 200, listing.text


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(_refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node))
    return set()


def test_the_openapi_document_lists_the_shared_problems_and_resolves(app: FastAPI) -> None:
    document = json.loads(json.dumps(app.openapi()))
    schemas = document["components"]["schemas"]
    assert {r.rsplit("/", 1)[1] for r in _refs(document)} <= set(schemas)
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            where = f"{method.upper()} {path}"
            assert "500" in responses, where
            if "requestBody" in operation:
                assert {"400", "413", "422"} <= set(responses), where
            if operation.get("security"):
                assert {"401", "403"} <= set(responses), where
            if any(p["in"] == "path" for p in operation.get("parameters", [])):
                assert "404" in responses, where
            for status, response in responses.items():
                if status >= "400" and path != "/api/v1/health":  # its 503 is its health body
                    assert list(response["content"]) == ["application/problem+json"], where
