"""One client's HTTP calls: its context (connection, random stream, deadlines), and calls that ride out a server
restart (a connection error is counted and retried; a timeout is counted and not, since a POST may have acted)."""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx

from bench.deployment import Deployment, sse_events
from bench.soak.recorder import Recorder
from bench.soak.world import World

# Every call has a timeout: a turn waits behind others on two cores, so generous, but a hang still ends.
HTTP_TIMEOUT = httpx.Timeout(60.0, connect=5.0)
# A connection error is the server restarting (a few seconds): retried this often, then given up.
RETRY_PAUSE_S = 0.5
MAX_RETRIES = 240
WORDS = ("river", "stone", "lamp", "garden", "copper", "violet", "harbour", "seven", "eleven", "north", "winter",
         "ledger", "cedar", "falcon", "quiet", "marble", "orbit", "signal", "lantern", "meadow", "canyon", "silver",
         "thunder", "paper", "window", "bridge", "ember", "glacier", "willow", "compass")


@dataclass
class ClientContext:
    """One client thread's connection, random stream and deadlines, and what everyone shares."""

    index: int
    http: httpx.Client
    rng: random.Random
    world: World
    rec: Recorder
    url: str
    key: str
    base: str
    max_tokens: int
    hard_deadline: float
    made: int = 0

    def words(self, low: int, high: int) -> str:
        return " ".join(self.rng.choice(WORDS) for _ in range(self.rng.randint(low, high)))

    def unique(self, prefix: str) -> str:
        self.made += 1
        return f"{prefix}-{self.index}-{self.made}"


def admin_http(deployment: Deployment) -> httpx.Client:
    """A connection to the deployment as its admin, with the soak's timeouts."""
    return httpx.Client(base_url=deployment.url, timeout=HTTP_TIMEOUT,
                        headers={"Authorization": f"Bearer {deployment.admin_key}"})


def shown(path: str, params: dict | None) -> str:
    return f"{path}?{urlencode(params)}" if params else path


def request(ctx: ClientContext, op: str, method: str, path: str, **kwargs: Any) -> httpx.Response | None:
    """One call, retried after a connection error (the server restarting); None when no answer came."""
    for _ in range(MAX_RETRIES):
        if time.monotonic() > ctx.hard_deadline:
            return None
        started = time.perf_counter()
        try:
            response = ctx.http.request(method, path, **kwargs)
        except httpx.TimeoutException:  # a hang is a finding, and a POST may have taken effect: not retried
            ctx.rec.timeout(op, method, shown(path, kwargs.get("params")))
            return None
        except httpx.TransportError as exc:
            ctx.rec.connection_error(op, exc)
            time.sleep(RETRY_PAUSE_S)
            continue
        ctx.rec.answered(op, method, shown(path, kwargs.get("params")), response.status_code, response.text,
                         (time.perf_counter() - started) * 1000)
        return response
    return None


def stream(ctx: ClientContext, op: str, path: str, body: dict,
           headers: dict | None = None) -> tuple[httpx.Response, list[tuple[str | None, str]]] | None:
    """A streamed POST read to its end (SSE events), retried like `request`; None when no answer came."""
    for _ in range(MAX_RETRIES):
        if time.monotonic() > ctx.hard_deadline:
            return None
        started = time.perf_counter()
        try:
            with ctx.http.stream("POST", path, json=body, headers=headers) as response:
                if response.status_code == 200:
                    events, text = sse_events(response), ""
                else:
                    events, text = [], response.read().decode(errors="replace")
        except httpx.TimeoutException:
            ctx.rec.timeout(op, "POST", path)
            return None
        except httpx.TransportError as exc:  # also a stream cut off by the restart: the turn is asked again
            ctx.rec.connection_error(op, exc)
            time.sleep(RETRY_PAUSE_S)
            continue
        ctx.rec.answered(op, "POST", path, response.status_code, text, (time.perf_counter() - started) * 1000)
        return response, events
    return None


def error_code(data: str) -> tuple[str, str]:
    """(code, message) of an SSE error event's data (ours, or OpenAI's {"error": {...}})."""
    try:
        payload = json.loads(data)
    except ValueError:
        return "unparsed", data
    payload = payload.get("error", payload) if isinstance(payload, dict) else {}
    return str(payload.get("code")), str(payload.get("message"))
