"""OpenAI-compatible chat completions and models: `model` names the agent, the last message is the user's
new input.

The session is the header X-Lifelong-Session or the body's `session_id` (its state has read the history, so
the earlier messages are not read again); without either, the earlier messages find the conversation's
session or begin one (agent.conversations). Every response names its session in the X-Lifelong-Session
header. What an agent cannot do (several choices, tools, JSON modes, log-probabilities) is a 400 saying so,
never silently ignored. `max_tokens` and usage count the model's own tokens.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy import select

from agent.auth import Principal
from agent.conversations import conversation_session, read_conversation
from agent.deps import CurrentKey, Db, ServicesDep
from agent.errors import ApiError, not_found, unprocessable
from agent.runtime import StateMismatch, TurnResult
from agent.schemas import MAX_ID, ChatCompletionRequest, ModelList, ModelObject
from agent.services import Services
from agent.sse import SSE_HEADERS, sse_event
from agent.turns import chat_target, message_bytes, run_turn, stream_turn
from memory.db import AgentGone
from memory.schema import Agent
from models import SamplingConfig

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["openai"])
SESSION_HEADER = "X-Lifelong-Session"
DEFAULTS = SamplingConfig()


def _session_for(services: Services, principal: Principal, agent_name: str, session_id: int | None,
                 history: list[tuple[str, bytes]]) -> int:
    """The session named, else the one this key's conversation continues, else a new one that read `history`."""
    with services.sessions() as db:
        agent_id = db.scalar(select(Agent.id).where(Agent.name == agent_name))
        if agent_id is None or not principal.can_access(agent_id):
            raise not_found(f"model (agent) {agent_name!r}")
        if session_id is not None:
            return session_id  # chat_target checks it exists, is a chat and is the caller's
        if history:
            runtime = services.runtimes.get(db.get(Agent, agent_id))
            with unprocessable("messages: "):  # before a session reads them in: its turns would fail on them
                for _, earlier in history:
                    runtime.encode(earlier)
        found = conversation_session(db, agent_id=agent_id, key_id=principal.key_id, history=history)
        db.commit()
        return found


def _refuse_unsupported(body: ChatCompletionRequest) -> None:
    """400 for what a request asks that an agent's turn cannot give, naming the field."""
    unsupported = [
        ("n", body.n not in (None, 1), "an agent gives one reply per turn; leave n at 1"),
        ("tools", bool(body.tools), "tool calls are not supported; send the conversation without tools"),
        ("functions", bool(body.functions), "function calls are not supported"),
        ("tool_choice", body.tool_choice not in (None, "none"), "tool calls are not supported"),
        ("response_format", (body.response_format or {}).get("type", "text") != "text",
         "only text replies are supported (response_format {'type': 'text'})"),
        ("logprobs", bool(body.logprobs), "log-probabilities are not returned"),
        ("top_logprobs", body.top_logprobs is not None, "log-probabilities are not returned"),
    ]
    for param, asked, why in unsupported:
        if asked:
            raise ApiError(400, f"{param}: {why}", code="unsupported", param=param)


def _usage(result: TurnResult) -> dict:
    return {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.reply_tokens,
            "total_tokens": result.prompt_tokens + result.reply_tokens}


@router.get("/models", response_model=ModelList)
def list_models(db: Db, principal: CurrentKey) -> ModelList:
    """The agents this key may chat with, as OpenAI's model objects (oldest first)."""
    query = select(Agent.name, Agent.created_at).order_by(Agent.id)
    if principal.agent_id is not None:
        query = query.where(Agent.id == principal.agent_id)
    return ModelList(data=[_model(name, created) for name, created in db.execute(query)])


@router.get("/models/{model}", response_model=ModelObject)
def retrieve_model(model: str, db: Db, principal: CurrentKey) -> ModelObject:
    row = db.execute(select(Agent.id, Agent.name, Agent.created_at).where(Agent.name == model)).first()
    if row is None or not principal.can_access(row.id):
        raise not_found(f"model (agent) {model!r}")
    return _model(row.name, row.created_at)


def _model(name: str, created: datetime) -> ModelObject:
    return ModelObject(id=name, created=int(created.replace(tzinfo=created.tzinfo or UTC).timestamp()))


def _finish_reason(result: TurnResult) -> str:
    return "stop" if result.stop_reason == "end_of_turn" else "length"


@router.post("/chat/completions")
async def chat_completions(body: ChatCompletionRequest, services: ServicesDep, principal: CurrentKey,
                           x_lifelong_session: Annotated[int | None, Header(ge=1, le=MAX_ID)] = None):
    _refuse_unsupported(body)
    conversation = read_conversation(body.messages, services.settings.max_message_bytes)
    content = message_bytes(conversation.message, services.settings.max_message_bytes)
    if not content:
        raise ApiError(422, "the last user message is empty")
    named = x_lifelong_session if x_lifelong_session is not None else body.session_id
    history = [] if named is not None else conversation.history  # a named session's state has read its history
    session_id = await run_in_threadpool(_session_for, services, principal, body.model, named, history)
    target = await chat_target(services, principal, session_id)
    if target.agent_name != body.model:
        raise not_found(f"session {session_id}")  # a session of another agent than `model` names
    with unprocessable("messages: "):  # before anything is logged or a stream is opened
        tokens = target.runtime.encode(content)
    given = {"temperature": body.temperature, "top_p": body.top_p, "repetition_penalty": body.repetition_penalty,
             "no_repeat_ngram": body.no_repeat_ngram}  # None: the default
    sampling = dataclasses.replace(
        DEFAULTS, seed=body.seed, max_tokens=body.max_completion_tokens or body.max_tokens,
        max_bytes=services.settings.max_reply_bytes,
        **{field: value for field, value in given.items() if value is not None})
    completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    headers = {SESSION_HEADER: str(session_id)}
    base = {"id": completion_id, "created": created, "model": body.model}
    if not body.stream:
        result = await run_turn(services, target, content, tokens, sampling)
        return JSONResponse({
            **base, "object": "chat.completion",
            "choices": [{"index": 0, "finish_reason": _finish_reason(result), "logprobs": None,
                         "message": {"role": "assistant", "content": result.reply.decode("utf-8", errors="replace")}}],
            "usage": _usage(result),
        }, headers=headers)

    def chunk(delta: dict, finish_reason: str | None = None) -> bytes:
        return sse_event(None, {**base, "object": "chat.completion.chunk",
                                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]})

    include_usage = body.stream_options is not None and body.stream_options.include_usage

    async def events():
        yield chunk({"role": "assistant", "content": ""})
        try:
            async for item in stream_turn(services, target, content, tokens, sampling):
                if isinstance(item, TurnResult):
                    yield chunk({}, _finish_reason(item))
                    if include_usage:  # OpenAI's last chunk: no choices, the usage
                        yield sse_event(None, {**base, "object": "chat.completion.chunk", "choices": [],
                                               "usage": _usage(item)})
                else:
                    yield chunk({"content": item})
        except (AgentGone, StateMismatch) as exc:  # deleted or forgotten during the turn: the caller's to act on
            yield sse_event(None, {"error": {"message": f"{exc}; the turn was not kept", "param": None,
                                             **_stream_error(exc)}})
        except Exception as exc:  # the stream has started: say so in it, then end it properly
            log.exception("chat completion stream of session %s failed", session_id)
            failure = {"message": f"the reply failed: {type(exc).__name__}", "type": "server_error", "param": None,
                       "code": "internal_error"}
            yield sse_event(None, {"error": failure})
        yield sse_event(None, "[DONE]")

    return StreamingResponse(events(), media_type="text/event-stream", headers={**SSE_HEADERS, **headers})


def _stream_error(exc: Exception) -> dict[str, str]:
    """The code and OpenAI type of a turn that ended for the caller's reason (as the REST route's status says)."""
    if isinstance(exc, AgentGone):
        return {"code": "not_found", "type": "not_found_error"}
    return {"code": "conflict", "type": "invalid_request_error"}
