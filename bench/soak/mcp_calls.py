"""The MCP tools over streamable HTTP at /mcp, through the `mcp` SDK's own client.

Each call is an MCP session of its own (initialize, then the tool), as a stateless client would do it. The HTTP
statuses come from a response hook, so a 5xx of /mcp is counted; a tool's error carrying a 5xx is an in-band fault.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from bench.soak.http_calls import MAX_RETRIES, RETRY_PAUSE_S, ClientContext

MCP_TIMEOUT_S = 60.0
# A tool's error carries the API's status first ("500: ..."): one at 5xx is a server fault inside MCP.
TOOL_SERVER_FAULT = re.compile(r"\b5\d\d: ")


async def mcp_tool(ctx: ClientContext, op: str, tool: str, arguments: dict) -> Any:
    async def on_response(response: httpx2.Response) -> None:
        body = ""
        if response.status_code >= 500:
            await response.aread()
            body = response.text
        ctx.rec.answered(op, response.request.method, "/mcp", response.status_code, body, None)

    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {ctx.key}"}, timeout=MCP_TIMEOUT_S,
                              event_hooks={"response": [on_response]})
    async with http, Client(streamable_http_client(f"{ctx.url}/mcp", http_client=http)) as client:
        return await client.call_tool(tool, arguments)


def exception_leaves(exc: BaseException) -> Iterator[BaseException]:
    """The exceptions inside `exc`: the SDK raises the transport's error inside exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from exception_leaves(inner)
    else:
        yield exc
        if exc.__cause__ is not None:
            yield from exception_leaves(exc.__cause__)


def mcp_call(ctx: ClientContext, op: str, tool: str, arguments: dict) -> Any:
    """An MCP tool's result, retried after connection errors like `request`; None when none came."""
    for _ in range(MAX_RETRIES):
        if time.monotonic() > ctx.hard_deadline:
            return None
        started = time.perf_counter()
        try:
            result = asyncio.run(asyncio.wait_for(mcp_tool(ctx, op, tool, arguments), MCP_TIMEOUT_S))
        except Exception as exc:
            leaves = list(exception_leaves(exc))
            if any(isinstance(leaf, (TimeoutError, httpx2.TimeoutException)) for leaf in leaves):
                ctx.rec.timeout(op, "POST", "/mcp")
                return None
            if any(isinstance(leaf, httpx2.TransportError) for leaf in leaves):
                ctx.rec.connection_error(op, leaves[-1])
                time.sleep(RETRY_PAUSE_S)
                continue
            raise  # a 5xx was counted by the hook; the caller counts this as the client's error
        ctx.rec.latency(op, (time.perf_counter() - started) * 1000)
        if result.is_error:
            message = result.content[0].text if result.content else ""
            status = re.search(r"\b(\d{3}): ", message)
            ctx.rec.in_band_error(op, "/mcp", f"tool_error {status.group(1) if status else '?'}", message,
                                  server_fault=bool(TOOL_SERVER_FAULT.search(message)))
            return None
        structured = result.structured_content or {}
        return structured["result"] if set(structured) == {"result"} else structured
    return None
