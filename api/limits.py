"""Request body size limit, enforced before a route reads a body into memory.

The largest legitimate body is a merge patch of a desired state, which the twin caps
well below this (``max_request_bytes``, 128 KiB by default); anything larger is refused
with 413 whether it declares a ``Content-Length`` or streams chunks.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import Problem, problem_response

MAX_BODY_BYTES = 256 * 1024


def _too_large(limit: int) -> Problem:
    return Problem(413, f"the request body exceeds {limit} bytes", kind="body-too-large")


class BodySizeLimitMiddleware:
    """Answer 413 for bodies above ``limit`` bytes (declared or counted while streaming).

    ``routes`` maps path prefixes to their own limits (file uploads); the first match wins.
    """

    def __init__(
        self, app: ASGIApp, limit: int = MAX_BODY_BYTES, routes: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.default = limit
        self.routes = dict(routes or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        limit = next((n for p, n in self.routes.items() if path.startswith(p)), self.default)
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > limit:
                    response = problem_response(_too_large(limit), scope.get("path"))
                    await response(scope, receive, send)
                    return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Raised inside the route's body read, so the Problem handler answers.
                    raise _too_large(limit)
            return message

        await self.app(scope, counting_receive, send)
