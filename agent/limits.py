"""Request limits: headers, and bodies enforced while they arrive (a missing or lying Content-Length changes
nothing)."""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent.errors import ApiError, error_response

# Headers past this are a 431. The HTTP server reads up to READ_HEADER_BYTES of them (agent.serve), so such a
# request is answered; past that it can only close the connection.
MAX_HEADER_BYTES = 64 * 1024
READ_HEADER_BYTES = 1024 * 1024


def too_large(limit: int, what: str = "request body") -> ApiError:
    return ApiError(413, f"the {what} is larger than this server's limit of {limit:,} bytes; send less "
                         "(documents can be split into several)")


class BodyLimitMiddleware:
    """Rejects headers beyond MAX_HEADER_BYTES with 431, and a body beyond `limit_for(scope)` bytes with 413,
    before the route sees them.

    Reading past the limit raises the 413 error, so routes that stream their body (documents) see it as an
    exception and can record the failure.
    """

    def __init__(self, app: ASGIApp, limit_for: Callable[[Scope], int]):
        self.app, self.limit_for = app, limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if sum(len(name) + len(value) for name, value in scope["headers"]) > MAX_HEADER_BYTES:
            message = (f"the request headers are larger than this server's limit of {MAX_HEADER_BYTES:,} bytes; "
                       "send fewer or shorter ones")
            await error_response(431, "headers_too_large", message)(scope, receive, send)
            return
        limit = self.limit_for(scope)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            error = too_large(limit)
            await error_response(413, error.code, error.detail)(scope, receive, send)
            return
        received, overflowed = 0, False

        async def limited_receive() -> Message:
            # One message may carry many reads' worth: the server buffers what arrived while the route was busy.
            # The bytes within the limit are still delivered and only the next read fails, so a route that
            # answers from the start of a body (a bad first import line) answers the same however it was chunked.
            nonlocal received, overflowed
            if overflowed:
                raise too_large(limit)
            message = await receive()
            if message["type"] == "http.request":
                body = message.get("body", b"")
                if received + len(body) > limit:
                    overflowed = True
                    message = {**message, "body": body[: limit - received], "more_body": True}
                received += len(message.get("body", b""))
            return message

        await self.app(scope, limited_receive, send)
