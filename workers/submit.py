"""What the API calls: record events or documents in SQL, commit, then enqueue the work on them.

Tasks carry ids only and are sent after the commit, so a worker never looks for a row that is not
there yet. Should the process die between commit and send, nothing is lost: every worker start
re-enqueues whatever SQL still shows pending (`requeue_pending`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from celery import Celery
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from learner.forget import Forgotten, forget_source
from learner.replay import active_forget_agents
from memory.db import lock_agent
from memory.eventlog import (
    append_document_chunks,
    append_events,
    finish_document,
    mark_document_failed,
    open_document,
    pending_learning,
)
from memory.schema import Memory

log = logging.getLogger(__name__)

# Chunk events one `learn` task of a document covers (about 8 s of work at 2 KiB chunks on 2 CPU cores).
CHUNKS_PER_TASK = 16


def enqueue_learning(app: Celery, *, agent_id: int, event_id: int) -> None:
    """Ask a worker to learn the agent's events up to `event_id` (call after they are committed)."""
    app.send_task("lifelong.learn", args=(agent_id, event_id))


def enqueue_forget(app: Celery, *, agent_id: int) -> None:
    """Ask a worker to run the agent's forget jobs (call after they are committed)."""
    app.send_task("lifelong.forget", args=(agent_id,))


def forget_memories(app: Celery, sessions: sessionmaker[Session], *, agent_id: int, weights: bool,
                    event_id: int | None = None, document_id: int | None = None,
                    session_id: int | None = None) -> Forgotten:
    """Forget one source's memories (at once) and, with `weights`, what the weights learned from it (a forget
    job, learner.replay); commits, then enqueues the job. ValueError unless exactly one source is named."""
    with sessions.begin() as db:
        forgotten = forget_source(db, agent_id=agent_id, weights=weights, event_id=event_id,
                                  document_id=document_id, session_id=session_id)
    if forgotten.job_id is not None:
        enqueue_forget(app, agent_id=agent_id)
    return forgotten


def enqueue_snapshot(app: Celery, *, agent_id: int) -> None:
    """Ask a maintenance worker to write the agent's memory index snapshot (see workers.tasks.snapshot_memory)."""
    app.send_task("lifelong.snapshot_memory", args=(agent_id,))


def enqueue_document_learning(app: Celery, *, agent_id: int, event_ids: Sequence[int]) -> None:
    """Learning of a document's chunk events (committed), one task per CHUNKS_PER_TASK of them.

    Every chunk commits on its own (progress shows chunk by chunk); a task covers several so the
    broker's per-task cost is paid once per CHUNKS_PER_TASK steps, and no task runs for hours.
    """
    ends = list(event_ids[CHUNKS_PER_TASK - 1 :: CHUNKS_PER_TASK])
    if event_ids and ends[-1:] != [event_ids[-1]]:
        ends.append(event_ids[-1])
    for event_id in ends:
        enqueue_learning(app, agent_id=agent_id, event_id=event_id)


def submit_events(app: Celery, sessions: sessionmaker[Session], *, session_id: int,
                  events: Sequence[tuple[str, bytes]]) -> list[int]:
    """Append (role, content) events to a session, commit, enqueue their learning; returns their ids."""
    with sessions.begin() as db:
        rows = append_events(db, session_id=session_id, events=events)
        agent_id, ids = rows[0].agent_id, [row.id for row in rows]
    enqueue_learning(app, agent_id=agent_id, event_id=ids[-1])
    return ids


class DocumentUpload:
    """A document received in pieces of any size, in bounded memory: whole chunk events are committed
    CHUNKS_PER_TASK at a time as they arrive, and their learning is enqueued after each commit.

    `finish()` commits the tail and hands the status over to learning; `fail()` marks a broken upload
    failed (chunks already committed stay in the log; those not learned yet never will be).
    """

    def __init__(self, app: Celery, sessions: sessionmaker[Session], *, agent_id: int, chunk_bytes: int,
                 name: str = "", content_type: str = "text/plain"):
        self.app, self.sessions, self.agent_id, self.chunk_bytes = app, sessions, agent_id, chunk_bytes
        self.name, self.content_type = name, content_type
        self.document_id: int | None = None
        self.bytes_written = 0
        self._session_id: int | None = None
        self._buffer = bytearray()
        self._chunks: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.bytes_written += len(data)
        self._buffer += data
        while len(self._buffer) >= self.chunk_bytes:
            self._chunks.append(bytes(self._buffer[: self.chunk_bytes]))
            del self._buffer[: self.chunk_bytes]
            if len(self._chunks) >= CHUNKS_PER_TASK:
                self._commit(finish=False)

    def finish(self) -> int:
        """Commit what is left and return the document id; ValueError if no byte ever arrived."""
        if self._buffer:
            self._chunks.append(bytes(self._buffer))
            self._buffer.clear()
        if self.document_id is None and not self._chunks:
            raise ValueError("the document is empty: send at least one byte")
        self._commit(finish=True)
        return self.document_id

    def fail(self, reason: str) -> None:
        if self.document_id is not None:
            with self.sessions.begin() as db:
                mark_document_failed(db, document_id=self.document_id, reason=reason)

    def _commit(self, *, finish: bool) -> None:
        with self.sessions.begin() as db:
            lock_agent(db, self.agent_id)  # before the document's row: see lock_agent
            if self.document_id is None:
                document, session = open_document(db, agent_id=self.agent_id, name=self.name,
                                                  content_type=self.content_type)
                self.document_id, self._session_id = document.id, session.id
            event_ids = [event.id for event in append_document_chunks(
                db, document_id=self.document_id, session_id=self._session_id, chunks=self._chunks)] \
                if self._chunks else []
            if finish:
                finish_document(db, agent_id=self.agent_id, document_id=self.document_id)
        self._chunks = []
        enqueue_document_learning(self.app, agent_id=self.agent_id, event_ids=event_ids)


def requeue_pending(app: Celery, sessions: sessionmaker[Session], *, agent_id: int | None = None) -> int:
    """Enqueue work for everything SQL shows pending (of one agent, or all), and the re-encoding of memories stored
    in an older format; returns the number of tasks sent.

    Duplicates are harmless (tasks are idempotent), so this runs at every worker start: it covers
    a crash between commit and send, and messages a transport lost with a killed worker (a forget job
    killed mid-replay resumes from its checkpoint). Forget jobs go first: an agent with one learns nothing
    else until it is published.
    """
    with sessions() as db:
        learning = [(a, e) for a, e in pending_learning(db) if agent_id in (None, a)]
        forgetting = [a for a in active_forget_agents(db) if agent_id in (None, a)]
        # Memories stored before pair formats (memory.reencode): re-encoded once, by a maintenance worker.
        reencoding = [a for a in db.scalars(select(Memory.agent_id).where(Memory.pair_format.is_(None)).distinct())
                      if agent_id in (None, a)]
    for forgetting_agent in forgetting:
        enqueue_forget(app, agent_id=forgetting_agent)
    for learning_agent, event_id in learning:
        enqueue_learning(app, agent_id=learning_agent, event_id=event_id)
    if learning or forgetting:
        log.info("re-enqueued learning for %d agents and forget jobs for %d found pending in SQL", len(learning),
                 len(forgetting))
    for older in reencoding:
        app.send_task("lifelong.reencode_memory", args=(older,))
    return len(learning) + len(forgetting) + len(reencoding)
