"""The clients' chat turns: through `POST /v1/sessions/{id}/messages` (streamed and not) and through the OpenAI
endpoint. A turn the API acknowledged is remembered, so the audit can look for its events in the session's log."""

from __future__ import annotations

import json

from bench.soak.http_calls import ClientContext, error_code, request, stream
from bench.soak.world import AgentEntry, Turn

SESSIONS_PER_AGENT = 8
NEW_SESSION_SHARE = 0.15


def session_of(ctx: ClientContext, agent: AgentEntry) -> int | None:
    """One of the agent's sessions, or a new one (sometimes, and always while it has few)."""
    with ctx.world.lock:
        known = list(agent.sessions)
    if known and (len(known) >= SESSIONS_PER_AGENT or ctx.rng.random() > NEW_SESSION_SHARE):
        return ctx.rng.choice(known)
    response = request(ctx, "create_session", "POST", f"/v1/agents/{agent.id}/sessions")
    if response is None or response.status_code != 201:
        return None
    session_id = response.json()["id"]
    ctx.world.remember(agent, session=session_id)
    return session_id


def message_body(ctx: ClientContext, content: str, streamed: bool) -> dict:
    return {"content": content, "stream": streamed, "max_tokens": ctx.max_tokens, "seed": ctx.rng.randrange(2**31)}


def op_chat(ctx: ClientContext, agent: AgentEntry) -> None:
    session_id = session_of(ctx, agent)
    if session_id is None:
        return
    content = f"{ctx.words(2, 10)}?"
    path = f"/v1/sessions/{session_id}/messages"
    response = request(ctx, "chat", "POST", path, json=message_body(ctx, content, False))
    if response is not None and response.status_code == 200:
        done = response.json()
        ctx.world.remember(agent, turn=Turn(agent.id, session_id, done["user_event_id"], done["reply_event_id"],
                                            content))


def op_chat_stream(ctx: ClientContext, agent: AgentEntry) -> None:
    session_id = session_of(ctx, agent)
    if session_id is None:
        return
    content = f"{ctx.words(2, 10)}."
    path = f"/v1/sessions/{session_id}/messages"
    answer = stream(ctx, "chat_stream", path, message_body(ctx, content, True))
    if answer is None or answer[0].status_code != 200:
        return
    events = answer[1]
    name, data = events[-1] if events else ("missing", "{}")
    if name == "done":
        done = json.loads(data)
        ctx.world.remember(agent, turn=Turn(agent.id, session_id, done["user_event_id"], done["reply_event_id"],
                                            content))
    else:  # not_found: the agent was deleted during the turn (documented); anything else is the server's fault
        code, message = error_code(data) if name == "error" else ("no_done_event", str(events[-3:]))
        ctx.rec.in_band_error("chat_stream", path, code, message, server_fault=code != "not_found")


def openai_body(ctx: ClientContext, agent: AgentEntry, streamed: bool) -> dict:
    return {"model": agent.name, "messages": [{"role": "user", "content": f"{ctx.words(2, 10)}?"}],
            "max_tokens": ctx.max_tokens, "seed": ctx.rng.randrange(2**31), "stream": streamed}


def openai_headers(ctx: ClientContext, agent: AgentEntry) -> dict[str, str]:
    """Continue one of the agent's sessions half the time; otherwise the server starts one."""
    session_id = ctx.world.choose(ctx.rng, agent.sessions) if ctx.rng.random() < 0.5 else None
    return {"X-Lifelong-Session": str(session_id)} if session_id else {}


def op_openai_chat(ctx: ClientContext, agent: AgentEntry) -> None:
    response = request(ctx, "openai_chat", "POST", "/v1/chat/completions", json=openai_body(ctx, agent, False),
                       headers=openai_headers(ctx, agent))
    if response is not None and response.status_code == 200:
        ctx.world.remember(agent, session=int(response.headers["x-lifelong-session"]))


def op_openai_chat_stream(ctx: ClientContext, agent: AgentEntry) -> None:
    path = "/v1/chat/completions"
    answer = stream(ctx, "openai_chat_stream", path, openai_body(ctx, agent, True), openai_headers(ctx, agent))
    if answer is None or answer[0].status_code != 200:
        return
    response, events = answer
    ctx.world.remember(agent, session=int(response.headers["x-lifelong-session"]))
    failed = [data for _, data in events if data.startswith('{"error"')]
    if failed or not events or events[-1][1] != "[DONE]":
        code, message = error_code(failed[0]) if failed else ("no_done_event", str(events[-3:]))
        ctx.rec.in_band_error("openai_chat_stream", path, code, message, server_fault=code != "not_found")
