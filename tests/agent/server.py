"""End-to-end helpers: the processes come from bench.deployment (shared with the benchmarks); the
assertions about a streamed reply live here, with the tests."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TypeVar

import httpx

from bench.deployment import WAIT_S, Deployment, sse_events

__all__ = ["WAIT_S", "Deployment", "sse_events", "stream_message", "until"]

T = TypeVar("T")


def until(condition: Callable[[], T], what: str, poll_s: float = 0.2) -> T:
    """`condition()`'s first truthy value, polled every `poll_s`; fails naming `what` after WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(poll_s)
    return value


def stream_message(client: httpx.Client, session_id: int, content: str, **options) -> tuple[str, dict]:
    """POST a message with stream=true; returns the joined text pieces and the `done` event."""
    with client.stream("POST", f"/v1/sessions/{session_id}/messages",
                       json={"content": content, "stream": True, **options}) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
    assert [name for name, _ in events[:-1]] == ["piece"] * (len(events) - 1) and events[-1][0] == "done", events
    return "".join(json.loads(data)["text"] for _, data in events[:-1]), json.loads(events[-1][1])
