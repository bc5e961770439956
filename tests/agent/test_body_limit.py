"""The body limit refuses a read past it, not the bytes before it: an HTTP server hands a route whatever arrived
while the route was busy, so one message can hold far more than the first line the route answers from."""

from __future__ import annotations

import asyncio

import pytest

from agent.errors import ApiError
from agent.limits import BodyLimitMiddleware

LIMIT = 100


def run(messages: list[dict], reads: int) -> tuple[list[bytes], ApiError | None]:
    """Feeds `messages` to a route behind the limit that reads up to `reads` of them; what it got, and the error."""
    got: list[bytes] = []
    failure: ApiError | None = None
    queue = list(messages)

    async def receive() -> dict:
        return queue.pop(0)

    async def route(scope, receive, send) -> None:
        nonlocal failure
        try:
            for _ in range(reads):
                message = await receive()
                got.append(message["body"])
                if not message.get("more_body", False):
                    return
        except ApiError as error:
            failure = error

    async def send(message) -> None:
        raise AssertionError("the middleware answered instead of the route")

    middleware = BodyLimitMiddleware(route, limit_for=lambda scope: LIMIT)
    asyncio.run(middleware({"type": "http", "headers": []}, receive, send))
    return got, failure


def test_one_message_past_the_limit_still_delivers_what_fits():
    body = b"not a memory\n" + b"x" * (10 * LIMIT)
    got, failure = run([{"type": "http.request", "body": body, "more_body": True}], reads=1)
    assert got == [body[:LIMIT]] and failure is None


def test_reading_on_past_the_limit_is_a_413():
    body = b"y" * (LIMIT + 1)
    got, failure = run([{"type": "http.request", "body": body, "more_body": False}], reads=3)
    assert got == [body[:LIMIT]]
    assert failure is not None and failure.status_code == 413


@pytest.mark.parametrize("chunks", [[LIMIT], [LIMIT // 2, LIMIT - LIMIT // 2], [0, LIMIT]])
def test_a_body_exactly_at_the_limit_is_whole(chunks):
    messages = [{"type": "http.request", "body": b"z" * size, "more_body": True} for size in chunks]
    messages[-1]["more_body"] = False
    got, failure = run(messages, reads=len(chunks) + 1)
    assert b"".join(got) == b"z" * LIMIT and failure is None


def test_chunks_that_cross_the_limit_are_refused_at_the_crossing():
    messages = [{"type": "http.request", "body": b"a" * 60, "more_body": True},
                {"type": "http.request", "body": b"b" * 60, "more_body": True},
                {"type": "http.request", "body": b"c" * 60, "more_body": False}]
    got, failure = run(messages, reads=3)
    assert got == [b"a" * 60, b"b" * 40]
    assert failure is not None and failure.status_code == 413
