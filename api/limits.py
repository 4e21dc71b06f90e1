"""Request body size limit, enforced before a route reads a body into memory.

The largest legitimate body is a merge patch of a desired state, which the twin caps
well below this (``max_request_bytes``, 128 KiB by default); anything larger is refused
with 413 whether it declares a ``Content-Length`` or streams chunks.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import Problem, problem_response

MAX_BODY_BYTES = 256 * 1024


def _too_large(limit: int) -> Problem:
    return Problem(413, f"the request body exceeds {limit} bytes", kind="body-too-large")


class BodySizeLimitMiddleware:
    """Answer 413 for bodies above ``limit`` bytes (declared or counted while streaming)."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.limit:
                    response = problem_response(_too_large(self.limit), scope.get("path"))
                    await response(scope, receive, send)
                    return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # Raised inside the route's body read, so the Problem handler answers.
                    raise _too_large(self.limit)
            return message

        await self.app(scope, counting_receive, send)
