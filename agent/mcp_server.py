"""lifelong's memory and chat as a Model Context Protocol server (the official `mcp` SDK's MCPServer).

Tools: `remember` (text into an agent's document stream), `recall` (what would be recalled, with
provenance), `forget` (memories by id, document, session or event) and `chat` (one turn of a session).
Resources: an agent's memories (`lifelong://agents/{agent_id}/memories`) and one memory
(`lifelong://memories/{memory_id}`).

The server is a client of the public /v1 API, as the CLI is: every call carries the caller's API key, so an
MCP client sees exactly what its key may see (an agent key, its agent only), and failures are the API's own
sentences. `lifelong mcp` serves it over stdio, calling a running server over HTTP; `lifelong serve` mounts
it at /mcp (streamable HTTP; agent.mcp_http), where it calls its own app in-process with the key each
request brought.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any

import httpx
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from pydantic import Field

from agent.client import FINISHED_DOCUMENT_STATUSES, TIMEOUT, server_message
from agent.schemas import MAX_ID

# What a client may name: the API's own bounds, checked here too so a bad id is the tool's clear error.
Id = Annotated[int, Field(ge=1, le=MAX_ID)]
OptionalId = Annotated[int | None, Field(ge=1, le=MAX_ID)]
Json = dict[str, Any]
# remember waits this long for the worker to learn the text before answering with the document as it is.
LEARN_WAIT_S = 120.0
POLL_S = 0.2
# How many memories the agent's memories resource shows: the newest, as the API lists them.
MEMORY_PAGE = 50
INSTRUCTIONS = (
    "lifelong agents are long-lived language models with a memory of everything they read. `remember` gives "
    "an agent a text to read and learn; `recall` shows which stored memories the agent's own attention would "
    "weigh for a question, with where each came from; `forget` deletes memories; `chat` talks to the agent, "
    "which answers from its memory. Ids come from the lifelong API (`lifelong agents list`)."
)

ApiOpener = Callable[[Context], AbstractAsyncContextManager["LifelongApi"]]


class LifelongApi:
    """The few /v1 calls the tools make; an error response becomes a ToolError carrying the API's sentence."""

    def __init__(self, http: httpx.AsyncClient):
        self.http = http

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ToolError(f"cannot reach the lifelong server at {self.http.base_url}: {exc}") from exc
        if response.is_error:
            raise ToolError(f"{response.status_code}: {server_message(response)}")
        return None if response.status_code == 204 else response.json()


def build_server(open_api: ApiOpener) -> MCPServer:
    """The MCP server; `open_api(ctx)` opens the API client for one request (the key decides what it sees)."""
    server = MCPServer(name="lifelong", instructions=INSTRUCTIONS)

    @server.tool()
    async def remember(agent_id: Id, text: str, ctx: Context, name: str = "remembered", wait: bool = True) -> Json:
        """Give the agent `text` to read: it is stored as memories with their provenance and learned by the
        agent's weights. With `wait` (the default) this returns once the text is learned, so `recall` and
        `chat` find it; otherwise at once, with the document's status."""
        if not text:
            raise ToolError("text is empty: there is nothing to remember")
        async with open_api(ctx) as api:
            document = await api.call("POST", f"/v1/agents/{agent_id}/documents", params={"name": name},
                                      content=text.encode(), headers={"Content-Type": "text/plain; charset=utf-8"})
            deadline = time.monotonic() + LEARN_WAIT_S
            while wait and document["status"] not in FINISHED_DOCUMENT_STATUSES and time.monotonic() < deadline:
                await ctx.report_progress(document["bytes_learned"], document["bytes_received"], "learning")
                await asyncio.sleep(POLL_S)
                document = await api.call("GET", f"/v1/documents/{document['id']}")
        if document["status"] == "failed":
            raise ToolError(f"document {document['id']} failed: {document['failed_reason']}")
        return document

    @server.tool()
    async def recall(agent_id: Id, query: str, ctx: Context,
                     top_k: Annotated[int, Field(ge=1, le=100)] = 5) -> list[Json]:
        """The agent's memories its attention would weigh while reading `query`, best first: each with its
        score, text and provenance (event, document or chat session)."""
        async with open_api(ctx) as api:
            return await api.call("POST", f"/v1/agents/{agent_id}/memories/recall",
                                  json={"query": query, "top_k": top_k})

    @server.tool()
    async def forget(agent_id: Id, ctx: Context, memory_id: OptionalId = None, document_id: OptionalId = None,
                     session_id: OptionalId = None, event_id: OptionalId = None, weights: bool = True) -> Json:
        """Delete memories of the agent: one memory, or all of a document, a chat session or an event. Name
        exactly one. Deleted memories are gone from recall and chat at once. For a document, session or
        event, `weights` (the default) also takes it out of the agent's weights: a forget job re-learns
        everything after it but it (its progress: `job`); a single memory leaves the weights as they are."""
        chosen = {"memory_id": memory_id, "document_id": document_id, "session_id": session_id,
                  "event_id": event_id}
        named = {key: value for key, value in chosen.items() if value is not None}
        if len(named) != 1:
            raise ToolError("name exactly one of memory_id, document_id, session_id or event_id")
        async with open_api(ctx) as api:
            if memory_id is None:
                return await api.call("DELETE", f"/v1/agents/{agent_id}/memories",
                                      params={**named, "weights": str(weights).lower()})
            memory = await api.call("GET", f"/v1/memories/{memory_id}")
            if memory["agent_id"] != agent_id:  # the id names another agent's memory the key can also see
                raise ToolError(f"memory {memory_id} is not agent {agent_id}'s")
            await api.call("DELETE", f"/v1/memories/{memory_id}")
        return {"deleted": 1, "job": None}

    @server.tool()
    async def chat(agent_id: Id, message: str, ctx: Context, session_id: OptionalId = None) -> Json:
        """One turn with the agent: its reply to `message`, drawing on what it remembers. Without a
        `session_id` a new session starts; pass the returned one to go on in the same conversation."""
        async with open_api(ctx) as api:
            if session_id is None:
                session_id = (await api.call("POST", f"/v1/agents/{agent_id}/sessions", json={}))["id"]
            else:
                session = await api.call("GET", f"/v1/sessions/{session_id}")
                if session["agent_id"] != agent_id:
                    raise ToolError(f"session {session_id} is not agent {agent_id}'s")
            turn = await api.call("POST", f"/v1/sessions/{session_id}/messages", json={"content": message})
        return {"session_id": session_id, "reply": turn["content"], "stop_reason": turn["stop_reason"],
                "weight_version": turn["weight_version"], "user_event_id": turn["user_event_id"],
                "reply_event_id": turn["reply_event_id"]}

    @server.resource("lifelong://agents/{agent_id}/memories", mime_type="application/json",
                     description=f"the agent's newest {MEMORY_PAGE} memories, with provenance")
    async def agent_memories(agent_id: str, ctx: Context) -> str:
        async with open_api(ctx) as api:
            page = await _read(api, f"/v1/agents/{_resource_id(agent_id)}/memories", params={"limit": MEMORY_PAGE})
        return json.dumps(page["data"], ensure_ascii=False)

    @server.resource("lifelong://memories/{memory_id}", mime_type="application/json",
                     description="one memory: its whole text and provenance")
    async def one_memory(memory_id: str, ctx: Context) -> str:
        async with open_api(ctx) as api:
            return json.dumps(await _read(api, f"/v1/memories/{_resource_id(memory_id)}"), ensure_ascii=False)

    return server


def _resource_id(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_ID:
        raise ResourceError(f"{text!r} is not an id (a positive integer)")
    return int(text)


async def _read(api: LifelongApi, path: str, **kwargs: Any) -> Any:
    try:
        return await api.call("GET", path, **kwargs)
    except ToolError as exc:  # a resource read fails as a resource error, with the same sentence
        raise ResourceError(str(exc)) from None


def remote_api(base_url: str, api_key: str | None) -> ApiOpener:
    """For `lifelong mcp` (stdio): every request goes to the server at `base_url` with one key."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    @asynccontextmanager
    async def open_api(ctx: Context) -> AsyncIterator[LifelongApi]:
        async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=TIMEOUT) as http:
            yield LifelongApi(http)

    return open_api
