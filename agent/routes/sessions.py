"""Chat sessions and their messages (SSE when stream=true)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from agent.deps import CurrentKey, Db, PathId, ServicesDep, agent_for, session_for
from agent.errors import unprocessable
from agent.pagination import MAX_LIMIT, keyset_page
from agent.runtime import StateMismatch, TurnResult
from agent.schemas import MessageCreate, MessagePublic, Page, SessionPublic, TurnPublic
from agent.sse import SSE_HEADERS, sse_event
from agent.turns import chat_target, message_bytes, run_turn, stream_turn
from memory.db import AgentGone
from memory.eventlog import create_session
from memory.schema import Event, StreamSession
from models import SamplingConfig

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["sessions"])


def session_public(db: Session, session: StreamSession) -> SessionPublic:
    return SessionPublic(
        id=session.id,
        agent_id=session.agent_id,
        kind=session.kind,
        position=session.position,
        events=db.scalar(select(func.count()).select_from(Event).where(Event.session_id == session.id)),
        created_at=session.created_at,
        updated_at=session.updated_at,
    )


@router.post("/agents/{agent_id}/sessions", status_code=201, response_model=SessionPublic)
def create_chat_session(agent_id: PathId, db: Db, principal: CurrentKey) -> SessionPublic:
    agent = agent_for(db, principal, agent_id)
    session = create_session(db, agent_id=agent.id, kind="chat")
    db.commit()
    return session_public(db, session)


@router.get("/agents/{agent_id}/sessions", response_model=Page[SessionPublic])
def list_sessions(
    agent_id: PathId, db: Db, principal: CurrentKey, cursor: str | None = None,
    limit: int = Query(50, ge=1, le=MAX_LIMIT),
) -> Page[SessionPublic]:
    agent = agent_for(db, principal, agent_id)
    query = select(StreamSession).where(StreamSession.agent_id == agent.id, StreamSession.kind == "chat")
    rows, next_cursor = keyset_page(db, query, StreamSession.id, cursor=cursor, limit=limit)
    return Page(data=[session_public(db, session) for session in rows], next_cursor=next_cursor)


@router.get("/sessions/{session_id}", response_model=SessionPublic)
def get_session(session_id: PathId, db: Db, principal: CurrentKey) -> SessionPublic:
    return session_public(db, session_for(db, principal, session_id))


def turn_public(result: TurnResult, bytes_in: int) -> TurnPublic:
    return TurnPublic(
        user_event_id=result.user_event_id,
        reply_event_id=result.reply_event_id,
        content=result.reply.decode("utf-8", errors="replace"),
        stop_reason=result.stop_reason,
        weight_version=result.weight_version,
        bytes_in=bytes_in,
        bytes_out=len(result.reply),
        first_byte_ms=round(result.first_byte_ms, 2),
        elapsed_ms=round(result.elapsed_ms, 2),
    )


@router.post(
    "/sessions/{session_id}/messages",
    response_model=TurnPublic,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "with stream=true: `piece` events {text}, then one `done` event",
        }
    },
)
async def post_message(session_id: PathId, body: MessageCreate, services: ServicesDep, principal: CurrentKey):
    content = message_bytes(body.content, services.settings.max_message_bytes)
    target = await chat_target(services, principal, session_id)
    with unprocessable("content: "):  # before anything is logged or a stream is opened
        tokens = target.runtime.encode(content)
    sampling = SamplingConfig(temperature=body.temperature, top_p=body.top_p, seed=body.seed,
                              max_tokens=body.max_tokens,
                              max_bytes=min(body.max_bytes or services.settings.max_reply_bytes,
                                            services.settings.max_reply_bytes),
                              repetition_penalty=body.repetition_penalty, no_repeat_ngram=body.no_repeat_ngram)
    if not body.stream:
        return turn_public(await run_turn(services, target, content, tokens, sampling), len(content))

    async def events():
        try:
            async for item in stream_turn(services, target, content, tokens, sampling):
                if isinstance(item, TurnResult):
                    done = turn_public(item, len(content)).model_dump()
                    del done["content"]
                    yield sse_event("done", done)
                else:
                    yield sse_event("piece", {"text": item})
        except AgentGone as exc:  # deleted during the turn
            yield sse_event("error", {"code": "not_found", "message": f"{exc}; the turn was not kept"})
        except StateMismatch as exc:  # e.g. the message was forgotten before it was answered
            yield sse_event("error", {"code": "conflict", "message": str(exc)})
        except Exception as exc:  # headers are sent; the stream itself must say it failed
            log.exception("session %s: turn failed mid-stream", session_id)
            yield sse_event("error", {"code": "internal_error", "message": f"the turn failed: {type(exc).__name__}"})

    return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)


@router.get("/sessions/{session_id}/messages", response_model=Page[MessagePublic])
def list_messages(
    session_id: PathId,
    db: Db,
    principal: CurrentKey,
    cursor: str | None = None,
    limit: int = Query(50, ge=1, le=MAX_LIMIT),
) -> Page[MessagePublic]:
    """Oldest first; pass next_cursor to read on."""
    session = session_for(db, principal, session_id)
    query = select(Event).where(Event.session_id == session.id)
    rows, next_cursor = keyset_page(db, query, Event.seq, cursor=cursor, limit=limit)
    return Page(
        data=[
            MessagePublic(
                id=e.id,
                seq=e.seq,
                role=e.role,
                content=e.content.decode("utf-8", errors="replace"),
                created_at=e.created_at,
                learned=e.learned_at is not None,
                failed_reason=e.failed_reason,
            )
            for e in rows
        ],
        next_cursor=next_cursor,
    )
