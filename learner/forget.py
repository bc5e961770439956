"""Forgetting a source (a document, a session or one event): its memories at once, and its weights by a replay.

`forget_source` runs in the caller's transaction: it deletes the source's memories (as `memory.admin`
does), and with `weights` it marks the source's events forgotten, so that they are never learned again,
drops the serving state of the chat sessions that read them, and queues a forget job when any of them had
been learned. The job (learner.replay) rolls the weights back to a kept version from before the earliest of
them and re-learns everything after it but them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from memory.admin import delete_memories
from memory.db import lock_agent
from memory.eventlog import DROPPED_STATE
from memory.schema import Document, Event, ForgetJob, StreamSession


@dataclass(frozen=True)
class Forgotten:
    deleted: int  # memories deleted
    events: int  # events marked forgotten (0 without weights)
    job_id: int | None  # the forget job that takes it out of the weights; None when nothing learned needs it


def forget_source(db: Session, *, agent_id: int, weights: bool, event_id: int | None = None,
                  document_id: int | None = None, session_id: int | None = None) -> Forgotten:
    """Forget one source's memories and, with `weights`, what the weights learned from it; the caller commits
    (and then enqueues the job, `workers.submit.forget_memories`)."""
    sources = [(Event.id, event_id), (Event.document_id, document_id), (Event.session_id, session_id)]
    named = [(column, value) for column, value in sources if value is not None]
    if len(named) != 1:
        raise ValueError("name exactly one of event_id, document_id or session_id")
    # Before any row a learner's commit also writes (memory.db.lock_agent's lock order); it also keeps a
    # learner from committing these events between this read and the marks below. (Agents learn
    # "downstream" only, learner.base.learning_config: stored keys never depend on the weights.)
    lock_agent(db, agent_id)
    deleted = delete_memories(db, agent_id=agent_id, event_id=event_id, document_id=document_id,
                              session_id=session_id)
    if not weights:
        return Forgotten(deleted=deleted, events=0, job_id=None)
    column, value = named[0]
    rows = db.execute(select(Event.id, Event.learned_at).where(
        Event.agent_id == agent_id, column == value, Event.forgotten_at.is_(None))).all()
    now = datetime.now(UTC)
    if rows:
        ids = [row.id for row in rows]
        db.execute(update(Event).where(Event.id.in_(ids)).values(forgotten_at=now))
        # A chat session's serving state read these events too: it is dropped, and the session's next turn
        # re-reads its log without them (agent.runtime), so that no reply can draw on them either.
        read_them = select(Event.session_id).where(Event.id.in_(ids)).distinct()
        db.execute(update(StreamSession).where(StreamSession.id.in_(read_them), StreamSession.kind == "chat")
                   .values(**DROPPED_STATE))
        # A client's history still holds the forgotten turns: it no longer matches the log, so it starts anew.
        db.execute(update(StreamSession).where(StreamSession.id.in_(read_them)).values(transcript_digest=None))
    if document_id is not None:  # the whole document: it says so, rather than "learned" or a "learning" never ending
        db.execute(update(Document).where(Document.id == document_id, Document.agent_id == agent_id)
                   .values(status="forgotten", updated_at=now))
    learned = [row.id for row in rows if row.learned_at is not None]
    if not learned:  # nothing reached the weights: the events are simply never learned now
        return Forgotten(deleted=deleted, events=len(rows), job_id=None)
    job = ForgetJob(agent_id=agent_id, status="queued", first_event_id=min(learned), events_total=0, events_done=0,
                    bytes_total=0, bytes_done=0)
    db.add(job)
    db.flush()
    return Forgotten(deleted=deleted, events=len(rows), job_id=job.id)
