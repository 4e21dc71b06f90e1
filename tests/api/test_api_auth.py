"""Bearer tokens and roles: who may call what, and how refusals look."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from api_helpers import ADMIN_ENV_TOKEN, assert_problem

from api.backends import Backend
from api.tokens import TOKEN_PREFIX, hash_token

Headers = Callable[[str], dict[str, str]]

# (method, path, body, least role); bodies are invalid on purpose where that is enough:
# authorization is decided before the body is looked at.
ENDPOINTS = [
    ("GET", "/api/v1/chargers", None, "viewer"),
    ("GET", "/api/v1/chargers/CP-1", None, "viewer"),
    ("GET", "/api/v1/chargers/CP-1/shadow", None, "viewer"),
    ("GET", "/api/v1/chargers/CP-1/audit", None, "viewer"),
    ("GET", "/api/v1/audit", None, "viewer"),
    ("PATCH", "/api/v1/chargers/CP-1/shadow/desired", {"nope": 1}, "operator"),
    ("POST", "/api/v1/chargers", {"id": "bad id!"}, "admin"),
    ("DELETE", "/api/v1/chargers/CP-unknown", None, "admin"),
    ("GET", "/api/v1/tokens", None, "admin"),
    ("POST", "/api/v1/tokens", {"name": ""}, "admin"),
    ("DELETE", "/api/v1/tokens/tok_unknown", None, "admin"),
]
RANK = {"viewer": 0, "operator": 1, "admin": 2}


async def call(
    client: httpx.AsyncClient, method: str, path: str, body: object, headers: dict[str, str]
) -> httpx.Response:
    return await client.request(method, path, json=body, headers=headers)


@pytest.mark.parametrize(("method", "path", "body", "needed"), ENDPOINTS)
async def test_roles_below_the_needed_one_get_403_and_the_rest_pass(
    client: httpx.AsyncClient, auth: Headers, method: str, path: str, body: object, needed: str
) -> None:
    for role in ("viewer", "operator", "admin"):
        response = await call(client, method, path, body, auth(role))
        if RANK[role] < RANK[needed]:
            problem = assert_problem(response, 403)
            assert needed in problem["detail"]
        else:
            assert response.status_code not in (401, 403), (role, response.text)


@pytest.mark.parametrize(("method", "path", "body", "needed"), ENDPOINTS)
async def test_missing_or_unknown_tokens_get_401_with_a_bearer_challenge(
    client: httpx.AsyncClient, method: str, path: str, body: object, needed: str
) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer ct_not-a-real-token"},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic dXNlcjpwYXNz"},
    ):
        response = await call(client, method, path, body, headers)
        assert_problem(response, 401)
        assert response.headers["www-authenticate"].startswith("Bearer")


async def test_the_admin_env_token_is_an_admin(client: httpx.AsyncClient) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_ENV_TOKEN}"}
    response = await client.post(
        "/api/v1/tokens", json={"name": "ci", "role": "viewer"}, headers=headers
    )
    assert response.status_code == 201, response.text
    near_miss = {"Authorization": f"Bearer {ADMIN_ENV_TOKEN}x"}
    assert_problem(await client.get("/api/v1/tokens", headers=near_miss), 401)


async def test_a_created_token_is_shown_once_and_stored_hashed(
    client: httpx.AsyncClient, auth: Headers, backend: Backend
) -> None:
    response = await client.post(
        "/api/v1/tokens", json={"name": "grafana", "role": "viewer"}, headers=auth("admin")
    )
    assert response.status_code == 201
    created = response.json()
    secret = created["token"]
    assert secret.startswith(TOKEN_PREFIX) and len(secret) > 40
    assert created["role"] == "viewer" and created["name"] == "grafana"
    assert response.headers["location"] == f"/api/v1/tokens/{created['id']}"

    viewer = {"Authorization": f"Bearer {secret}"}
    assert (await client.get("/api/v1/chargers", headers=viewer)).status_code == 200

    listed = (await client.get("/api/v1/tokens", headers=auth("admin"))).json()
    mine = next(t for t in listed if t["id"] == created["id"])
    assert "token" not in mine and mine["lastUsedAt"] is not None and mine["revoked"] is False
    assert secret not in str(listed)

    rows = await backend.db.fetchall("SELECT token_hash FROM api_tokens")
    assert (hash_token(secret),) in [tuple(r) for r in rows]
    assert all(secret not in str(r) for r in rows)


async def test_a_revoked_token_stops_working_at_once(
    client: httpx.AsyncClient, auth: Headers
) -> None:
    created = (
        await client.post(
            "/api/v1/tokens", json={"name": "temp", "role": "operator"}, headers=auth("admin")
        )
    ).json()
    headers = {"Authorization": f"Bearer {created['token']}"}
    assert (await client.get("/api/v1/audit", headers=headers)).status_code == 200

    response = await client.delete(f"/api/v1/tokens/{created['id']}", headers=auth("admin"))
    assert response.status_code == 204
    assert_problem(await client.get("/api/v1/audit", headers=headers), 401)
    listed = (await client.get("/api/v1/tokens", headers=auth("admin"))).json()
    assert next(t for t in listed if t["id"] == created["id"])["revoked"] is True


async def test_token_requests_are_validated(client: httpx.AsyncClient, auth: Headers) -> None:
    for body, pointer in (
        ({"name": "x", "role": "superuser"}, "/role"),
        ({"name": "x", "role": "viewer", "expires": 3}, "/expires"),
        ({"role": "viewer"}, "/name"),
    ):
        response = await client.post("/api/v1/tokens", json=body, headers=auth("admin"))
        problem = assert_problem(response, 422)
        assert pointer in [e.get("pointer") for e in problem["errors"]], problem
    assert_problem(await client.delete("/api/v1/tokens/tok_nope", headers=auth("admin")), 404)
