"""The clients' operation mix, each client a seeded random draw of: chat turns (`chat_operations`), document
uploads, memory listings (following cursors) and deletes, forgetting a document, session or event, creating and
deleting agents, weight rollbacks, and the MCP tools `remember` and `recall`."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from bench.soak.chat_operations import op_chat, op_chat_stream, op_openai_chat, op_openai_chat_stream
from bench.soak.http_calls import ClientContext, request
from bench.soak.mcp_calls import mcp_call
from bench.soak.world import MAX_AGENTS, MIN_AGENTS, AgentEntry

MAX_OPERATIONS_PER_CLIENT = 1_000_000


def op_upload_document(ctx: ClientContext, agent: AgentEntry) -> None:
    """A few chunk events' worth (the deployment's chunks are 1 KiB), as plain text or NDJSON lines."""
    text = f"{ctx.words(40, 700)}."
    if ctx.rng.random() < 0.3:
        lines = [text[i : i + 400] for i in range(0, len(text), 400)]
        body, kind = "".join(json.dumps({"text": line}) + "\n" for line in lines).encode(), "application/x-ndjson"
    else:
        body, kind = text.encode(), "text/plain"
    response = request(ctx, "upload_document", "POST", f"/v1/agents/{agent.id}/documents",
                       params={"name": ctx.unique("doc")}, content=body, headers={"Content-Type": kind})
    if response is not None and response.status_code == 202:
        ctx.world.remember(agent, document=response.json()["id"])


def op_list_memories(ctx: ClientContext, agent: AgentEntry) -> None:
    """A few pages, following next_cursor; sometimes filtered to one document."""
    params: dict[str, Any] = {"limit": ctx.rng.randint(5, 50)}
    document_id = ctx.world.choose(ctx.rng, agent.documents) if ctx.rng.random() < 0.3 else None
    if document_id is not None:
        params["document_id"] = document_id
    for _ in range(5):
        response = request(ctx, "list_memories", "GET", f"/v1/agents/{agent.id}/memories", params=params)
        if response is None or response.status_code != 200 or not response.json()["next_cursor"]:
            return
        params["cursor"] = response.json()["next_cursor"]


def op_delete_memory(ctx: ClientContext, agent: AgentEntry) -> None:
    response = request(ctx, "delete_memory.list", "GET", f"/v1/agents/{agent.id}/memories", params={"limit": 20})
    if response is None or response.status_code != 200 or not response.json()["data"]:
        return
    memory_id = ctx.rng.choice(response.json()["data"])["id"]
    request(ctx, "delete_memory", "DELETE", f"/v1/memories/{memory_id}")


def forget(ctx: ClientContext, agent: AgentEntry, op: str, source: str, source_id: int | None, weights: bool) -> None:
    if source_id is None:
        return
    request(ctx, op, "DELETE", f"/v1/agents/{agent.id}/memories",
            params={source: source_id, "weights": str(weights).lower()})


def op_forget_document(ctx: ClientContext, agent: AgentEntry) -> None:
    forget(ctx, agent, "forget_document", "document_id", ctx.world.choose(ctx.rng, agent.documents), True)


def op_forget_session(ctx: ClientContext, agent: AgentEntry) -> None:
    weights = ctx.rng.random() < 0.5
    forget(ctx, agent, "forget_session", "session_id", ctx.world.choose(ctx.rng, agent.sessions), weights)


def op_forget_event(ctx: ClientContext, agent: AgentEntry) -> None:
    forget(ctx, agent, "forget_event", "event_id", ctx.world.choose(ctx.rng, agent.user_events), True)


def create_agent(ctx: ClientContext) -> None:
    name = ctx.unique("soak")
    response = request(ctx, "create_agent", "POST", "/v1/agents", json={"name": name, "base_checkpoint": ctx.base})
    if response is not None and response.status_code == 201:
        ctx.world.add(AgentEntry(response.json()["id"], name))


def op_create_agent(ctx: ClientContext, agent: AgentEntry) -> None:
    create_agent(ctx)


def op_delete_agent(ctx: ClientContext, agent: AgentEntry) -> None:
    victim = ctx.world.take_for_delete(ctx.rng)
    if victim is not None:
        response = request(ctx, "delete_agent", "DELETE", f"/v1/agents/{victim.id}")
        ctx.world.settle_delete(victim, None if response is None else response.status_code)


def op_rollback(ctx: ClientContext, agent: AgentEntry) -> None:
    response = request(ctx, "rollback.list", "GET", f"/v1/agents/{agent.id}/weights", params={"limit": 20})
    if response is None or response.status_code != 200:
        return
    versions = [0, *(row["version"] for row in response.json()["data"])]
    request(ctx, "rollback", "POST", f"/v1/agents/{agent.id}/weights/rollback",
            json={"version": ctx.rng.choice(versions)})


def op_get_agent(ctx: ClientContext, agent: AgentEntry) -> None:
    request(ctx, "get_agent", "GET", f"/v1/agents/{agent.id}")


def op_mcp_remember(ctx: ClientContext, agent: AgentEntry) -> None:
    # wait=false: waiting for the worker (up to 120 s) would hold a client for the learning, not the service.
    document = mcp_call(ctx, "mcp_remember", "remember",
                        {"agent_id": agent.id, "text": f"{ctx.words(5, 30)}.", "name": ctx.unique("mcp"),
                         "wait": False})
    if isinstance(document, dict) and "id" in document:
        ctx.world.remember(agent, document=document["id"])


def op_mcp_recall(ctx: ClientContext, agent: AgentEntry) -> None:
    mcp_call(ctx, "mcp_recall", "recall", {"agent_id": agent.id, "query": ctx.words(1, 4), "top_k": 5})


Operation = Callable[[ClientContext, AgentEntry], None]
# (weight, operation): chat dominates, as it would in use; the destructive ones are rarer but steady.
OPERATIONS: dict[str, tuple[int, Operation]] = {
    "chat": (18, op_chat),
    "chat_stream": (18, op_chat_stream),
    "openai_chat": (7, op_openai_chat),
    "openai_chat_stream": (6, op_openai_chat_stream),
    "upload_document": (8, op_upload_document),
    "list_memories": (8, op_list_memories),
    "delete_memory": (5, op_delete_memory),
    "forget_document": (4, op_forget_document),
    "forget_session": (3, op_forget_session),
    "forget_event": (2, op_forget_event),
    "create_agent": (3, op_create_agent),
    "delete_agent": (2, op_delete_agent),
    "rollback": (4, op_rollback),
    "mcp_remember": (4, op_mcp_remember),
    "mcp_recall": (4, op_mcp_recall),
    "get_agent": (3, op_get_agent),
}


def next_operation(ctx: ClientContext) -> str:
    """A weighted draw, nudged to keep the number of agents between MIN_AGENTS and MAX_AGENTS."""
    name = ctx.rng.choices(list(OPERATIONS), weights=[weight for weight, _ in OPERATIONS.values()])[0]
    alive = ctx.world.live_count()
    if name == "create_agent" and alive >= MAX_AGENTS:
        return "delete_agent"
    if name == "delete_agent" and alive <= MIN_AGENTS:
        return "create_agent"
    return name


def client_loop(ctx: ClientContext, stop: threading.Event, load_deadline: float) -> None:
    with ctx.http:
        for _ in range(MAX_OPERATIONS_PER_CLIENT):
            if stop.is_set() or time.monotonic() > load_deadline:
                return
            name = next_operation(ctx)
            agent = ctx.world.pick(ctx.rng)
            try:
                if agent is None:
                    create_agent(ctx)
                else:
                    OPERATIONS[name][1](ctx, agent)
            except Exception as exc:  # counted, and the client goes on: one odd answer must not end the soak
                ctx.rec.client_error(name, exc)
            ctx.rec.operation(name)
