"""The event log an agent learns from: appending chat turns, and documents as chunk events as they arrive.

Plain functions on the caller's SQL session (the caller commits); enqueueing the learning that
follows is `workers.submit`'s job, after the commit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from memory.db import AgentGone, lock_agent
from memory.schema import Document, Event, StreamSession
from models.tokenizer import ROLES

# A chat session's serving state, dropped: its next turn reads the session's log afresh (agent.runtime).
DROPPED_STATE = {"state": None, "position": 0, "events_read": 0}


def transcript_digest(previous: str, role: str, content: bytes) -> str:
    """The digest of a conversation after one more turn, as its client sees it: role and text (UTF-8, errors
    replaced as replies are sent, outer whitespace stripped, as chat front ends trim it)."""
    text = content.decode("utf-8", errors="replace").strip()
    return hashlib.sha256(f"{previous}\x00{role}\x00{text}".encode()).hexdigest()


def transcript_seed(key_id: int) -> str:
    """A conversation's digest before its first turn: the key's own, so that no other key continues it."""
    return hashlib.sha256(f"lifelong-key:{key_id}".encode()).hexdigest()


def create_session(db: Session, *, agent_id: int, kind: str = "chat",
                   transcript_key: int | None = None) -> StreamSession:
    """A new session of the agent (AgentGone if it was deleted). `transcript_key`: the key whose OpenAI client
    began it; its log then keeps a digest by which that client's next call finds it."""
    if kind not in ("chat", "stream"):
        raise ValueError(f"session kind must be 'chat' or 'stream', got {kind!r}")
    lock_agent(db, agent_id)
    session = StreamSession(agent_id=agent_id, kind=kind, position=0, next_seq=0,
                            transcript_digest=None if transcript_key is None else transcript_seed(transcript_key))
    db.add(session)
    db.flush()
    return session


def append_events(db: Session, *, session_id: int, events: Sequence[tuple[str, bytes]],
                  document_id: int | None = None) -> list[Event]:
    """Append (role, content) events to a session's log, in order; returns them with ids.

    It takes the agent's lock before writing (`lock_agent`): AgentGone if the agent was deleted."""
    session = db.get(StreamSession, session_id)
    if session is None:
        raise AgentGone(f"session {session_id} does not exist (deleted with its agent?)")
    lock_agent(db, session.agent_id)
    for role, content in events:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; use one of {sorted(ROLES)}")
        if not content:
            raise ValueError("an event needs at least one byte of content")
    last = db.execute(select(Event.byte_offset, func.length(Event.content)).where(Event.session_id == session_id)
                      .order_by(Event.seq.desc()).limit(1)).first()
    offset = 0 if last is None else last[0] + last[1]
    rows = []
    for role, content in events:
        rows.append(Event(agent_id=session.agent_id, session_id=session_id, document_id=document_id,
                          seq=session.next_seq, role=role, content=content, byte_offset=offset))
        session.next_seq += 1
        if session.transcript_digest is not None:
            session.transcript_digest = transcript_digest(session.transcript_digest, role, content)
        offset += len(content)
    db.add_all(rows)
    db.flush()
    return rows


def open_document(db: Session, *, agent_id: int, name: str = "",
                  content_type: str = "text/plain") -> tuple[Document, StreamSession]:
    """A document that arrives in pieces (status "receiving"), and the stream session its chunk events join."""
    document = Document(agent_id=agent_id, name=name, content_type=content_type, status="receiving",
                        bytes_received=0, bytes_processed=0)
    db.add(document)
    db.flush()
    return document, create_session(db, agent_id=agent_id, kind="stream")


def append_document_chunks(db: Session, *, document_id: int, session_id: int, chunks: Sequence[bytes]) -> list[Event]:
    """Append received chunks of an open document as its next chunk events; returns them with ids.

    It writes the document's row: the caller has taken `lock_agent` first."""
    events = append_events(db, session_id=session_id, document_id=document_id,
                           events=[("document", chunk) for chunk in chunks])
    db.execute(update(Document).where(Document.id == document_id).values(
        bytes_received=Document.bytes_received + sum(map(len, chunks)), updated_at=datetime.now(UTC)))
    return events


def receive_document(db: Session, *, agent_id: int, data: bytes, chunk_bytes: int,
                     name: str = "") -> tuple[int, list[int]]:
    """(document id, chunk event ids) of a document received whole, in the caller's transaction, as an upload
    commits one (benchmarks and tests log documents this way without HTTP)."""
    lock_agent(db, agent_id)
    document, stream = open_document(db, agent_id=agent_id, name=name)
    chunks = [data[start : start + chunk_bytes] for start in range(0, len(data), chunk_bytes)]
    events = append_document_chunks(db, document_id=document.id, session_id=stream.id, chunks=chunks)
    finish_document(db, agent_id=agent_id, document_id=document.id)
    return document.id, [event.id for event in events]


def learning_status(*, bytes_received: int, bytes_processed: int) -> str:
    """A fully received document's status: "learned" once every byte is, "learning" once some are,
    "queued" before. (One still "receiving", or "failed", keeps that status.)"""
    if bytes_processed >= bytes_received:
        return "learned"
    return "learning" if bytes_processed else "queued"


def finish_document(db: Session, *, agent_id: int, document_id: int) -> Document:
    """Every byte of an open document has arrived: from now on its status follows learning.

    Learners may already have learned some chunks (a chat turn's task learns every earlier event);
    holding the agent's learning lock means none commits between this read and this write.
    A transaction that appended chunks before this call must have taken the lock before them
    (the lock order `lock_agent` states).
    """
    lock_agent(db, agent_id)
    document = db.get(Document, document_id)
    db.refresh(document)
    if document.status == "forgotten":  # forgotten while it arrived: it stays so
        return document
    document.status = learning_status(bytes_received=document.bytes_received,
                                      bytes_processed=document.bytes_processed)
    document.updated_at = datetime.now(UTC)
    if document.status == "learned":  # its last chunks were learned before it was finished
        stream = db.scalar(select(Event.session_id).where(Event.document_id == document_id).limit(1))
        if stream is not None:
            drop_finished_stream(db, session_id=stream)
    return document


def drop_finished_stream(db: Session, *, session_id: int) -> None:
    """A learned document's stream reads nothing more: its learner state (an imported model's key/value
    windows, up to tens of megabytes, most of what a small document cost) is never read again. A replay
    that re-learns it starts from a stream checkpoint, kept where a later event of the stream needs one."""
    db.execute(update(StreamSession).where(StreamSession.id == session_id, StreamSession.kind == "stream")
               .values(learn_state=None, learn_last_token=None))


def mark_failed(db: Session, *, agent_id: int, through_event_id: int, reason: str) -> int:
    """Mark the agent's pending events up to `through_event_id` (and their documents) failed; returns how many."""
    lock_agent(db, agent_id)  # before the event and document rows a learner's commit also writes
    pending = (Event.agent_id == agent_id, Event.id <= through_event_id, Event.learned_at.is_(None),
               Event.failed_reason.is_(None), Event.forgotten_at.is_(None))
    document_ids = set(db.scalars(select(Event.document_id).where(*pending, Event.document_id.is_not(None))))
    count = db.execute(update(Event).where(*pending).values(failed_reason=reason)).rowcount
    if document_ids:
        db.execute(update(Document).where(Document.id.in_(document_ids))
                   .values(status="failed", failed_reason=reason, updated_at=datetime.now(UTC)))
    return count


def mark_event_failed(db: Session, *, agent_id: int, event_id: int, reason: str) -> bool:
    """Mark one event failed unless a learner got to it first; returns whether it was marked."""
    lock_agent(db, agent_id)  # before the event rows a learner's commit also writes
    return db.execute(update(Event).where(Event.id == event_id, Event.learned_at.is_(None),
                                          Event.failed_reason.is_(None)).values(failed_reason=reason)).rowcount == 1


def mark_document_failed(db: Session, *, document_id: int, reason: str) -> None:
    """The document failed; its chunks not learned yet are never learned (those learned stay learned)."""
    agent_id = db.scalar(select(Document.agent_id).where(Document.id == document_id))
    if agent_id is None:
        return
    lock_agent(db, agent_id)  # before the event and document rows a learner's commit also writes
    db.execute(update(Event).where(Event.document_id == document_id, Event.learned_at.is_(None),
                                   Event.failed_reason.is_(None)).values(failed_reason=reason))
    db.execute(update(Document).where(Document.id == document_id)
               .values(status="failed", failed_reason=reason, updated_at=datetime.now(UTC)))


def pending_learning(db: Session) -> list[tuple[int, int]]:
    """(agent id, highest pending event id) of every agent with events neither learned, failed nor forgotten."""
    rows = db.execute(select(Event.agent_id, func.max(Event.id))
                      .where(Event.learned_at.is_(None), Event.failed_reason.is_(None), Event.forgotten_at.is_(None))
                      .group_by(Event.agent_id))
    return [(agent_id, event_id) for agent_id, event_id in rows]


def unread_events(db: Session, *, session_id: int, events_read: int) -> list[Event]:
    """The events of a chat session its state has not read yet, oldest first.

    Normally just the new user message; more after a crash between logging a message and saving the
    state that read it; the whole log after a forget dropped the state. Forgotten events are never read.
    """
    return list(db.scalars(select(Event).where(Event.session_id == session_id, Event.seq >= events_read,
                                               Event.forgotten_at.is_(None)).order_by(Event.seq)))


def recent_turns(db: Session, *, session_id: int, role: str, count: int) -> list[bytes]:
    """The session's last `count` turns of `role` (its replies: "assistant"), newest first."""
    if count <= 0:
        return []
    return list(db.scalars(select(Event.content).where(
        Event.session_id == session_id, Event.role == role, Event.forgotten_at.is_(None))
        .order_by(Event.seq.desc()).limit(count)))


def append_reply(db: Session, *, session_id: int, reply: bytes, state: bytes, position: int,
                 read_at: datetime) -> tuple[int, bool]:
    """Log a reply with the session state that read it (`state`, at stream `position`): (the reply's event id,
    whether an event the turn read was forgotten since `read_at`, in which case the state is dropped instead:
    the next turn re-reads the log without what was forgotten)."""
    reply_event = append_events(db, session_id=session_id, events=[("assistant", reply)])[0]
    forgotten_meanwhile = db.scalar(select(Event.id).where(
        Event.session_id == session_id, Event.forgotten_at >= read_at).limit(1)) is not None
    kept = DROPPED_STATE if forgotten_meanwhile else {
        "state": state, "position": position, "events_read": reply_event.seq + 1}
    db.execute(update(StreamSession).where(StreamSession.id == session_id).values(**kept))
    return reply_event.id, forgotten_meanwhile
