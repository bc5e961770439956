"""Errors as JSON a person can act on, never a 500 for bad input:
`{"error": {"code": "...", "message": "...", "type": "...", "param": "..." | null}}` (`type` and `param`
as OpenAI's errors have them, so its clients read ours). Invalid input is a 422, except on the
OpenAI-compatible routes, where OpenAI's clients expect a 400."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
         409: "conflict", 413: "too_large", 415: "unsupported_media_type", 422: "invalid_request",
         431: "headers_too_large",
         503: "unavailable"}


# OpenAI's error types by status.
TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error", 500: "server_error",
         503: "server_error"}
# Routes whose clients are OpenAI's: invalid input there is a 400, as OpenAI answers it.
OPENAI_ROUTES = ("/v1/chat/completions", "/v1/models")


class ApiError(StarletteHTTPException):
    """An HTTP error with a stable machine-readable code and a sentence for people (`param`: the field at fault)."""

    def __init__(self, status_code: int, message: str, code: str | None = None, headers: dict[str, str] | None = None,
                 param: str | None = None):
        super().__init__(status_code, detail=message, headers=headers)
        self.code = code or CODES.get(status_code, "error")
        self.param = param


@contextmanager
def unprocessable(prefix: str = "", message: str | None = None) -> Iterator[None]:
    """Domain functions raise ValueError for input they cannot use: the caller's mistake, a 422 saying
    what was wrong (`message` instead of the error's own, where the route words it better)."""
    try:
        yield
    except ValueError as exc:
        raise ApiError(422, message or f"{prefix}{exc}") from None


def not_found(what: str) -> ApiError:
    """404 for what does not exist and for what belongs to another agent alike (never reveal which)."""
    return ApiError(404, f"{what} not found; check the id (and that your key belongs to its agent)")


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None,
                   param: str | None = None) -> JSONResponse:
    kind = TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    return JSONResponse({"error": {"code": code, "message": message, "type": kind, "param": param}},
                        status_code=status, headers=headers)


def _location(loc) -> str:
    return ".".join(str(part) for part in loc if part != "body") or "body"


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if exc.status_code == 400 and not isinstance(exc, ApiError):
        # FastAPI reports a body it could not parse (not UTF-8, JSON nested past Python's recursion
        # limit) as a generic 400; it is invalid input, as docs/API.md says: 422.
        if isinstance(exc.__cause__, UnicodeDecodeError):
            return error_response(422, "invalid_utf8", "the request body is not valid UTF-8; send UTF-8 encoded JSON")
        return error_response(422, "malformed_json", "the request body could not be parsed as JSON (nested too "
                              "deeply?); send one JSON object")
    code = getattr(exc, "code", None) or CODES.get(exc.status_code, "error")
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    status = exc.status_code
    if status == 422 and request.url.path.startswith(OPENAI_ROUTES):
        status = 400
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route {request.method} {request.url.path}; see /docs"
    return error_response(status, code, message, getattr(exc, "headers", None), getattr(exc, "param", None))


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    status = 400 if request.url.path.startswith(OPENAI_ROUTES) else 422
    if any(error.get("type") == "json_invalid" for error in errors):
        detail = next(e for e in errors if e.get("type") == "json_invalid")
        reason = (detail.get("ctx") or {}).get("error", "malformed")
        return error_response(status, "malformed_json", f"the request body is not valid JSON ({reason})")
    if any(error.get("type") == "string_unicode" for error in errors):  # bytes that are not UTF-8
        return error_response(status, "invalid_utf8", "the request body is not valid UTF-8; send UTF-8 encoded JSON")
    parts = [f"{_location(error['loc'])}: {error['msg']}" for error in errors]
    return error_response(status, "invalid_request", "; ".join(parts), param=_location(errors[0]["loc"]))


class UnexpectedErrors:
    """A 500 in the error shape for an exception no handler took, on a connection that stays usable.

    Not an exception handler: Starlette re-raises an exception after its handler for `Exception` answers, and
    the server then drops the keep-alive connection unannounced, failing a pooled client's next request.
    An exception after the response has started cannot be answered; it is re-raised, and the connection's
    closing is what tells the client."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception:
            if started:
                raise
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            response = error_response(500, "internal_error", "the server failed on this request; it was logged")
            await response(scope, receive, send)


async def _state_mismatch(request: Request, exc: Exception) -> JSONResponse:
    return error_response(409, "conflict", str(exc))


async def _agent_gone(request: Request, exc: Exception) -> JSONResponse:
    """The agent was deleted while this request worked on it (memory.db.lock_agent found it gone)."""
    return error_response(404, "not_found", f"{exc}; nothing of this request was kept")


def install_error_handlers(app: FastAPI) -> None:
    from agent.runtime import StateMismatch  # the runtime imports torch; this module stays light
    from memory.db import AgentGone

    app.add_exception_handler(StateMismatch, _state_mismatch)
    app.add_exception_handler(AgentGone, _agent_gone)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_middleware(UnexpectedErrors)  # the first added, so the innermost: other middleware see its 500
