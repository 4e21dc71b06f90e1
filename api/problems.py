"""RFC 9457 problem details: the one shape every error of the API takes.

Routes raise :class:`Problem`; the handlers installed by :func:`install_problem_handlers`
turn it, FastAPI's request validation errors, Starlette's 404/405 and any unexpected
exception into ``application/problem+json`` bodies, so clients parse one format. A
database that cannot be reached or is locked (:func:`store_outage`) is a 503 with
``Retry-After`` and one log line, not a 500 with a traceback.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from http import HTTPStatus
from typing import Annotated, Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
_TYPE_BASE = "urn:chargetwin:problem:"


class ProblemError(BaseModel):
    """One offending input: a JSON pointer into the body, or a parameter or header name."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "pointer": "/desired/config/HeartbeatInterval",
                "message": "300 is not of type 'string'",
            }
        }
    )

    pointer: Annotated[str | None, Field(description="RFC 6901 JSON pointer into the body.")] = None
    parameter: Annotated[str | None, Field(description="Query or path parameter at fault.")] = None
    header: Annotated[str | None, Field(description="Request header at fault.")] = None
    message: str


class ProblemDetails(BaseModel):
    """An RFC 9457 problem document (served as ``application/problem+json``)."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "type": "urn:chargetwin:problem:invalid-desired-state",
                "title": "Invalid desired state",
                "status": 422,
                "detail": "the desired state after the patch does not match the schema",
                "instance": "/api/v1/chargers/CP-1/shadow/desired",
                "errors": [
                    {
                        "pointer": "/desired/availability/1",
                        "message": "'Broken' is not one of ['Operative', 'Inoperative']",
                    }
                ],
            }
        }
    )

    type: str = Field("about:blank", description="URI naming the kind of problem.")
    title: str = Field(description="Short summary of the kind of problem.")
    status: int = Field(description="The HTTP status code.")
    detail: str | None = Field(None, description="What went wrong with this request.")
    instance: str | None = Field(None, description="The request path.")
    errors: list[ProblemError] | None = Field(None, description="Each offending input.")


class Problem(Exception):
    """An error the client should see; ``kind`` becomes ``urn:chargetwin:problem:<kind>``."""

    def __init__(
        self,
        status: int,
        detail: str | None = None,
        *,
        kind: str | None = None,
        title: str | None = None,
        errors: Sequence[ProblemError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail or title or HTTPStatus(status).phrase)
        self.status = status
        self.detail = detail
        self.type = f"{_TYPE_BASE}{kind}" if kind else "about:blank"
        self.title = title or HTTPStatus(status).phrase
        self.errors = list(errors) if errors is not None else None
        self.headers = headers or {}

    def to_model(self, instance: str | None) -> ProblemDetails:
        return ProblemDetails(
            type=self.type,
            title=self.title,
            status=self.status,
            detail=self.detail,
            instance=instance,
            errors=self.errors,
        )


def problem_response(problem: Problem, instance: str | None) -> JSONResponse:
    body = problem.to_model(instance).model_dump(exclude_none=True)
    for error in body.get("errors", []):
        error.setdefault("message", "")
    return JSONResponse(
        body, status_code=problem.status, headers=problem.headers, media_type=PROBLEM_MEDIA_TYPE
    )


_PROBLEM_SCHEMA_REF = {"$ref": "#/components/schemas/ProblemDetails"}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the error statuses a route can answer."""
    return {
        status: {
            "model": ProblemDetails,
            "description": HTTPStatus(status).phrase,
            "content": {PROBLEM_MEDIA_TYPE: {"schema": _PROBLEM_SCHEMA_REF}},
        }
        for status in statuses
    }


def problems_only(schema: dict[str, Any]) -> dict[str, Any]:
    """Make an OpenAPI document say what the API does: every error is a problem document.

    FastAPI lists error models as ``application/json`` too and documents its own 422 with
    a body the handlers above never send; both are replaced here.
    """
    problem = {PROBLEM_MEDIA_TYPE: {"schema": _PROBLEM_SCHEMA_REF}}
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            _document_shared_problems(operation)
            for status, response in operation.get("responses", {}).items():
                refs = {
                    c.get("schema", {}).get("$ref") for c in response.get("content", {}).values()
                }
                if refs & {_PROBLEM_SCHEMA_REF["$ref"], "#/components/schemas/HTTPValidationError"}:
                    response["content"] = problem
                    if status == "422":
                        response["description"] = "Invalid request (problem with `errors`)"
    for name in ("HTTPValidationError", "ValidationError"):
        schema.get("components", {}).get("schemas", {}).pop(name, None)
    return schema


# Problems the shared machinery answers for many operations, so each route need not list
# them: what makes an operation able to answer it, and what it means there.
_SHARED_PROBLEMS: tuple[tuple[int, str, str], ...] = (
    (400, "body", "Malformed request: the body is not valid JSON (`malformed-json`)"),
    (400, "header", "Malformed request header (for example `If-Match`)"),
    (401, "security", "No bearer token, or an unknown or revoked one"),
    (403, "security", "The token's role may not do this"),
    (404, "path", "Nothing at this address (an unknown id in the path)"),
    (413, "body", "The request body is too large (`body-too-large`)"),
    (422, "input", "Invalid request (problem with `errors`)"),
    (500, "any", "Unexpected error; it has been logged (`internal-error`)"),
    (
        503,
        "any",
        "The database cannot be reached or is busy; try again after `Retry-After` seconds "
        "(`store-unavailable`)",
    ),
)


def _document_shared_problems(operation: dict[str, Any]) -> None:
    """Add the shared problems an operation can answer to its ``responses``."""
    located = {p.get("in") for p in operation.get("parameters", [])}
    has = {
        "any": True,
        "body": "requestBody" in operation,
        "header": "header" in located,
        "security": bool(operation.get("security")),
        "path": "path" in located,
        "input": bool(located) or "requestBody" in operation,
    }
    responses = operation.setdefault("responses", {})
    for status, condition, description in _SHARED_PROBLEMS:
        if has[condition] and str(status) not in responses:
            responses[str(status)] = {
                "description": description,
                "content": {PROBLEM_MEDIA_TYPE: {"schema": _PROBLEM_SCHEMA_REF}},
            }


def validation_errors(errors: Sequence[Any]) -> list[ProblemError]:
    """Pydantic/FastAPI error entries as problem errors, located by where they occurred."""
    out: list[ProblemError] = []
    for error in errors:
        loc = [str(part) for part in error.get("loc", ())]
        where, path = (loc[0], loc[1:]) if loc else ("body", [])
        message = str(error.get("msg", "invalid"))
        if where == "body":
            pointer = "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in path)
            out.append(ProblemError(pointer=pointer, message=message))
        elif where == "header":
            out.append(ProblemError(header=path[0] if path else "", message=message))
        else:
            out.append(ProblemError(parameter=".".join(path), message=message))
    return out


async def _on_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return problem_response(exc, request.url.path)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        problem = Problem(
            400,
            "the request body is not valid JSON",
            kind="malformed-json",
            title="Malformed JSON",
            errors=validation_errors(errors),
        )
    else:
        problem = Problem(
            422,
            "the request does not match the API's schema",
            kind="validation-error",
            title="Invalid request",
            errors=validation_errors(errors),
        )
    return problem_response(problem, request.url.path)


async def _on_http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc.__cause__, Problem):
        # FastAPI wraps errors raised while it reads the body (our 413) in a 400.
        return problem_response(exc.__cause__, request.url.path)
    detail: str | None = exc.detail if isinstance(exc.detail, str) else None
    if detail == HTTPStatus(exc.status_code).phrase:
        detail = None
    if exc.status_code == 404 and detail is None:
        detail = f"no resource at {request.url.path}"
    if exc.status_code == 405 and detail is None:
        detail = f"{request.method} is not allowed on {request.url.path}"
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(_allowed_methods(request))
    problem = Problem(exc.status_code, detail, headers=headers)
    return problem_response(problem, request.url.path)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette names only the first route's)."""
    return [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] == Match.FULL
            for route in request.app.router.routes
        )
    ]


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


# Seconds a client is told to wait before it tries again while the database is away.
STORE_RETRY_AFTER = 5


def store_outage(exc: BaseException) -> BaseException | None:
    """The database error behind ``exc`` when it means "unreachable or busy now" rather
    than a defect: psycopg's OperationalError (the server is down, the connection was cut,
    a backend was terminated, the pool timed out waiting for a connection: PoolTimeout is
    one) or SQLite's "database is locked". Follows ``raise ... from`` and exception groups;
    None for anything else."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        error = pending.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        if _is_outage(error):
            return error
        if isinstance(error, BaseExceptionGroup):
            pending.extend(error.exceptions)
        if error.__cause__ is not None:
            pending.append(error.__cause__)
    return None


def _is_outage(error: BaseException) -> bool:
    if isinstance(error, sqlite3.OperationalError):
        message = str(error)
        return "database is locked" in message or "database table is locked" in message
    return isinstance(error, psycopg.OperationalError)


def store_unavailable_problem() -> Problem:
    return Problem(
        503,
        "the database cannot be reached or is busy; try again later",
        kind="store-unavailable",
        title="Database unavailable",
        headers={"Retry-After": str(STORE_RETRY_AFTER)},
    )


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_middleware(UnexpectedErrorMiddleware)


class UnexpectedErrorMiddleware:
    """Turn any exception a route did not expect into a logged, opaque 500 problem.

    A pure ASGI middleware rather than an ``Exception`` handler: Starlette re-raises after
    such a handler, which would log every failure twice and break in-process clients.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            outage = store_outage(exc)
            if outage is not None:
                # Not our defect and not the client's: one line, no traceback, and a 503
                # the client may retry after Retry-After.
                log.warning(
                    "%s %s: database unavailable (503): %s",
                    scope.get("method"),
                    scope.get("path"),
                    outage,
                )
                if started:
                    raise
                await problem_response(store_unavailable_problem(), scope.get("path"))(
                    scope, receive, send
                )
                return
            log.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            problem = Problem(
                500, "an unexpected error occurred; it has been logged", kind="internal-error"
            )
            await problem_response(problem, scope.get("path"))(scope, receive, send)
