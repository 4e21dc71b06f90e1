"""Every error class answers an RFC 9457 problem; the OpenAPI document describes the API."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from api_helpers import assert_problem
from fastapi import FastAPI

from api.limits import MAX_BODY_BYTES

Headers = Callable[[str], dict[str, str]]


async def test_unknown_routes_are_404_problems(client: httpx.AsyncClient) -> None:
    problem = assert_problem(await client.get("/api/v1/nowhere"), 404)
    assert problem["type"] == "about:blank" and problem["title"] == "Not Found"


async def test_wrong_methods_are_405_problems(client: httpx.AsyncClient, auth: Headers) -> None:
    response = await client.put("/api/v1/chargers", headers=auth("admin"))
    assert_problem(response, 405)
    assert "GET" in response.headers["allow"]


async def test_malformed_json_is_a_400_problem(client: httpx.AsyncClient, auth: Headers) -> None:
    response = await client.post(
        "/api/v1/chargers",
        content=b'{"id": "CP-1",',
        headers={**auth("admin"), "Content-Type": "application/json"},
    )
    problem = assert_problem(response, 400)
    assert problem["type"].endswith("malformed-json")


async def test_request_validation_is_a_422_problem_with_pointers(
    client: httpx.AsyncClient, auth: Headers
) -> None:
    response = await client.post("/api/v1/chargers", json=[1], headers=auth("admin"))
    problem = assert_problem(response, 422)
    assert problem["type"].endswith("validation-error")
    assert all("message" in e for e in problem["errors"])
    query = assert_problem(
        await client.get("/api/v1/chargers?online=maybe", headers=auth("viewer")), 422
    )
    assert query["errors"] == [{"parameter": "online", "message": query["errors"][0]["message"]}]


@pytest.mark.parametrize("declared", [True, False])
async def test_bodies_over_256_kib_are_413_problems(
    client: httpx.AsyncClient, auth: Headers, declared: bool
) -> None:
    body = b'{"id": "' + b"x" * MAX_BODY_BYTES + b'"}'

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 16 * 1024):
            yield body[start : start + 16 * 1024]

    response = await client.post(
        "/api/v1/chargers",
        content=body if declared else chunks(),
        headers={**auth("admin"), "Content-Type": "application/json"},
    )
    assert_problem(response, 413)


@pytest.mark.allow_logged_exceptions
async def test_unexpected_errors_are_opaque_logged_500_problems(
    app: FastAPI, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    async def explode() -> None:
        raise RuntimeError("database password is hunter2")

    app.add_api_route("/api/v1/explode", explode)
    with caplog.at_level(logging.ERROR, logger="api.problems"):
        response = await client.get("/api/v1/explode")
    problem = assert_problem(response, 500)
    assert "hunter2" not in response.text and problem["type"].endswith("internal-error")
    assert any(
        "hunter2" in r.getMessage() or (r.exc_info and "hunter2" in str(r.exc_info[1]))
        for r in caplog.records
    )


async def test_openapi_lists_every_endpoint_with_bearer_security(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    paths = spec["paths"]
    expected = {
        "/api/v1/chargers": {"get", "post"},
        "/api/v1/chargers/{charger_id}": {"get", "delete"},
        "/api/v1/chargers/{charger_id}/shadow": {"get"},
        "/api/v1/chargers/{charger_id}/shadow/desired": {"patch"},
        "/api/v1/chargers/{charger_id}/audit": {"get"},
        "/api/v1/audit": {"get"},
        "/api/v1/tokens": {"get", "post"},
        "/api/v1/tokens/{token_id}": {"delete"},
        "/api/v1/health": {"get"},
    }
    for path, methods in expected.items():
        assert methods <= set(paths[path]), path
        for method in methods:
            operation = paths[path][method]
            assert operation["summary"] and operation["tags"], (path, method)
            if path != "/api/v1/health":
                assert operation["security"] == [{"bearerAuth": []}], (path, method)
                assert "application/problem+json" in operation["responses"]["401"]["content"]
    for operations in paths.values():
        for operation in operations.values():
            for status, response in operation["responses"].items():
                if int(status) >= 400 and not status.startswith("503"):
                    assert list(response["content"]) == ["application/problem+json"], status
    health_503 = paths["/api/v1/health"]["get"]["responses"]["503"]["content"]
    assert health_503["application/json"]["schema"]["$ref"].endswith("/HealthOut")
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    patch_body = paths["/api/v1/chargers/{charger_id}/shadow/desired"]["patch"]["requestBody"]
    assert {"application/merge-patch+json", "application/json"} <= set(patch_body["content"])
    assert "example" in spec["components"]["schemas"]["ProblemDetails"]
    docs = await client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
