"""An OpenAI request's messages as a session: the turns before the last continue the session whose log they
match, or are read in as a new session's first turns; the last is the user's new message.

Chat front ends (Open WebUI, LibreChat, the `openai` SDK's examples) send the whole history on every call and
no session id. A session begun here keeps a digest of its log (memory.eventlog.transcript_digest), seeded
with the calling key: a history whose digest matches continues that session, so a conversation is one
session, each turn logged once. Two sessions can match only when their logs are the same turn for turn (the
same history sent twice as a new conversation, say): the newest is continued. A history that matches none
(edited, or begun elsewhere) starts a new session that reads it first, system turns included.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from agent.errors import ApiError
from agent.schemas import ChatMessage
from agent.turns import message_bytes
from memory.eventlog import append_events, create_session, transcript_digest, transcript_seed
from memory.schema import StreamSession

# OpenAI's roles and the log's: a developer message is the newer name of a system message.
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


@dataclass(frozen=True)
class Conversation:
    history: list[tuple[str, bytes]]  # (role, content) of the turns before the new message; empty ones left out
    message: str  # the user's new message


def message_text(message: ChatMessage, index: int) -> str:
    if message.content is None or isinstance(message.content, str):
        return message.content or ""
    texts = [part.text for part in message.content if part.type == "text"]  # only text parts carry input here
    if None in texts:
        raise ApiError(422, f"messages[{index}]: a content part of type 'text' needs a 'text' string")
    return "".join(texts)


def read_conversation(messages: list[ChatMessage], limit: int) -> Conversation:
    """The history and the new message; 422 naming the message for what a turn cannot be, 413 for a turn past
    `limit` bytes (each is a turn of its own, with a message's bound)."""
    for index, message in enumerate(messages):
        if message.role not in ROLES:
            raise ApiError(422, f"messages[{index}]: role {message.role!r} is not supported; use one of "
                                f"{sorted(ROLES)} (tool calls are not supported)")
    if messages[-1].role != "user":
        raise ApiError(422, f"messages[{len(messages) - 1}]: the last message must be the user's (the new input), "
                            f"not {messages[-1].role!r}")
    history = [(ROLES[m.role], message_bytes(message_text(m, i), limit)) for i, m in enumerate(messages[:-1])]
    return Conversation(history=[(role, content) for role, content in history if content],
                        message=message_text(messages[-1], len(messages) - 1))


def conversation_session(db: Session, *, agent_id: int, key_id: int, history: list[tuple[str, bytes]]) -> int:
    """The session this key's conversation continues, or a new one that has read `history`; the caller commits."""
    if history:
        digest = transcript_seed(key_id)
        for role, content in history:
            digest = transcript_digest(digest, role, content)
        found = db.scalar(select(StreamSession.id).where(
            StreamSession.agent_id == agent_id, StreamSession.kind == "chat",
            StreamSession.transcript_digest == digest).order_by(StreamSession.id.desc()).limit(1))
        if found is not None:
            return found
    session = create_session(db, agent_id=agent_id, transcript_key=key_id)
    if history:
        append_events(db, session_id=session.id, events=history)
    return session.id
