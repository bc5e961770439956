"""Database conflicts that clear on a retry (a deadlock, a serialization failure, a busy SQLite), retried for
every route in one place; a request that still cannot proceed is a 503 with Retry-After, never a 500.

An ASGI middleware rather than a retry in each route: the route runs again whole, with the same request
(its body replayed from what it read), so a route never half-retries. It retries only while nothing of
the response was sent. A route that commits as it reads its body (a document upload, a memory import) is
never run twice, since its first run may have committed part of it; it gets the 503, as does a body too large
to keep (`MAX_REPLAY_BYTES`).
A database that cannot be reached at all is a 503 too (`memory.db.is_transient` says which errors are
conflicts worth retrying; every OperationalError is the database's, not the caller's).
"""

from __future__ import annotations

import asyncio
import logging
import random

from sqlalchemy.exc import OperationalError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent.errors import error_response
from memory.db import is_transient

log = logging.getLogger(__name__)

ATTEMPTS = 4  # runs of a request, the first included
FIRST_DELAY_S = 0.05  # doubled at each retry, jittered
MAX_REPLAY_BYTES = 1 << 20  # request bodies kept for a retry; an upload past this is not retried
RETRY_AFTER_S = 1
# Routes that commit while they read their body: a second run would commit it again.
COMMITS_AS_IT_READS = ("/documents", "/memories/import")


class RetryTransientErrors:
    def __init__(self, app: ASGIApp, attempts: int = ATTEMPTS):
        self.app, self.attempts = app, attempts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = _ReplayableBody(receive)
        body.replayable = not (scope["method"] == "POST" and scope["path"].endswith(COMMITS_AS_IT_READS))
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        for attempt in range(1, self.attempts + 1):
            try:
                await self.app(scope, body.receive, watched)
                return
            except OperationalError as exc:
                if started:
                    raise
                retry = is_transient(exc) and attempt < self.attempts and body.replayable
                log.warning("%s %s: database error (%s)%s", scope["method"], scope["path"], exc.orig,
                            "; retrying" if retry else "; answered 503")
                if not retry:
                    break
                await asyncio.sleep(FIRST_DELAY_S * 2 ** (attempt - 1) * random.uniform(0.5, 1.5))
                body.rewind()
        response = error_response(503, "unavailable", "the database is busy or unreachable; retry in a moment",
                                  headers={"Retry-After": str(RETRY_AFTER_S)})
        await response(scope, body.receive, send)


class _ReplayableBody:
    """A request's `receive`, recording the body it delivers so that a retry reads the same bytes again."""

    def __init__(self, receive: Receive):
        self._receive = receive
        self._recorded: list[Message] = []
        self._recorded_bytes = 0
        self._replay_at: int | None = None  # index into the recording while replaying
        self.replayable = True

    def rewind(self) -> None:
        self._replay_at = 0

    async def receive(self) -> Message:
        if self._replay_at is not None and self._replay_at < len(self._recorded):
            self._replay_at += 1
            return self._recorded[self._replay_at - 1]
        message = await self._receive()
        if message["type"] == "http.request" and self.replayable:
            self._recorded_bytes += len(message.get("body", b""))
            if self._recorded_bytes > MAX_REPLAY_BYTES:
                self.replayable, self._recorded = False, []
            else:
                self._recorded.append(message)
        return message
