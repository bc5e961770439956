"""Request body limits, enforced while the body arrives (a missing or lying Content-Length changes nothing)."""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent.errors import ApiError, error_response


def too_large(limit: int, what: str = "request body") -> ApiError:
    return ApiError(413, f"the {what} is larger than this server's limit of {limit:,} bytes; send less "
                         "(documents can be split into several)")


class BodyLimitMiddleware:
    """Rejects a body beyond `limit_for(scope)` bytes with 413 before the route sees it.

    Past the limit, reading the body raises the 413 error, so routes that stream their body
    (documents) see it as an exception and can record the failure.
    """

    def __init__(self, app: ASGIApp, limit_for: Callable[[Scope], int]):
        self.app, self.limit_for = app, limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            error = too_large(limit)
            await error_response(413, error.code, error.detail)(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise too_large(limit)
            return message

        await self.app(scope, limited_receive, send)
