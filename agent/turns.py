"""Chat turns off the event loop: the model runs in the services' turn threads, pieces flow back as they come.

A turn that has started always finishes and commits, even if its client goes away mid-stream:
the log and the session state never disagree.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi.concurrency import run_in_threadpool

from agent.auth import Principal
from agent.deps import agent_for, session_for
from agent.errors import ApiError
from agent.limits import too_large
from agent.runtime import AgentRuntime, TurnResult
from agent.services import Services
from models import SamplingConfig

_FINISHED = object()


def message_bytes(content: str, limit: int) -> bytes:
    """A chat message as UTF-8: 422 if it cannot be (lone surrogates), 413 past the limit."""
    try:
        data = content.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(422, "the message is not valid Unicode text (it holds a lone surrogate); send UTF-8 text",
                       code="invalid_utf8") from None
    if len(data) > limit:
        raise too_large(limit, "message")
    return data


@dataclass(frozen=True)
class ChatTarget:
    runtime: AgentRuntime
    session_id: int
    agent_name: str


def _chat_target(services: Services, principal: Principal, session_id: int) -> ChatTarget:
    with services.sessions() as db:
        session = session_for(db, principal, session_id)
        if session.kind != "chat":
            raise ApiError(409, f"session {session_id} is a document stream; chat in a chat session")
        agent = agent_for(db, principal, session.agent_id)
    return ChatTarget(services.runtimes.get(agent), session_id, agent.name)


async def chat_target(services: Services, principal: Principal, session_id: int) -> ChatTarget:
    """The runtime serving a session the caller may chat in (loading the agent's model on first use)."""
    return await run_in_threadpool(_chat_target, services, principal, session_id)


async def run_turn(services: Services, target: ChatTarget, content: bytes, tokens: list[int],
                   sampling: SamplingConfig) -> TurnResult:
    """A turn of `content` (`tokens`: its tokens, from the target runtime's `encode`)."""
    loop = asyncio.get_running_loop()
    result = await loop.run_in_executor(services.turns, lambda: target.runtime.chat(
        session_id=target.session_id, content=content, tokens=tokens, sampling=sampling))
    _observe(services, result)
    return result


async def stream_turn(services: Services, target: ChatTarget, content: bytes, tokens: list[int],
                      sampling: SamplingConfig) -> AsyncIterator[str | TurnResult]:
    """The reply's text pieces of a turn of `content` (`tokens`, as in run_turn) as they are sampled, then the
    TurnResult."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    def on_piece(piece: str) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, piece)

    future = loop.run_in_executor(services.turns, lambda: target.runtime.chat(
        session_id=target.session_id, content=content, tokens=tokens, sampling=sampling, on_piece=on_piece))
    future.add_done_callback(lambda _: queue.put_nowait(_FINISHED))
    while (item := await queue.get()) is not _FINISHED:
        yield item
    result = await future
    _observe(services, result)
    yield result


def _observe(services: Services, result: TurnResult) -> None:
    services.metrics.first_byte.observe(result.first_byte_ms / 1000)
    services.metrics.reply_bytes.inc(len(result.reply))
