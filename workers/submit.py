"""What the API calls: record events or documents in SQL, commit, then enqueue the work on them.

Tasks carry ids only and are sent after the commit, so a worker never looks for a row that is not
there yet. Should the process die between commit and send, nothing is lost: every worker start
re-enqueues whatever SQL still shows pending (`requeue_pending`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from learner.eventlog import append_events, create_document, pending_learning, unsplit_documents

log = logging.getLogger(__name__)


def enqueue_learning(app: Celery, *, agent_id: int, event_id: int) -> None:
    """Ask a worker to learn the agent's events up to `event_id` (call after they are committed)."""
    app.send_task("lifelong.learn", args=(agent_id, event_id))


def enqueue_ingest(app: Celery, *, document_id: int) -> None:
    app.send_task("lifelong.ingest", args=(document_id,))


def enqueue_prune(app: Celery, *, agent_id: int) -> None:
    app.send_task("lifelong.prune_versions", args=(agent_id,))


def enqueue_rebuild_index(app: Celery, *, agent_id: int) -> None:
    app.send_task("lifelong.rebuild_index", args=(agent_id,))


def submit_events(app: Celery, sessions: sessionmaker[Session], *, session_id: int,
                  events: Sequence[tuple[str, bytes]]) -> list[int]:
    """Append (role, content) events to a session, commit, enqueue their learning; returns their ids."""
    with sessions.begin() as db:
        rows = append_events(db, session_id=session_id, events=events)
        agent_id, ids = rows[0].agent_id, [row.id for row in rows]
    enqueue_learning(app, agent_id=agent_id, event_id=ids[-1])
    return ids


def submit_document(app: Celery, sessions: sessionmaker[Session], *, agent_id: int, data: bytes, name: str = "",
                    content_type: str = "text/plain") -> int:
    """Store a received document, commit, enqueue its ingestion; returns its id (progress: its SQL row)."""
    with sessions.begin() as db:
        document_id = create_document(db, agent_id=agent_id, data=data, name=name, content_type=content_type).id
    enqueue_ingest(app, document_id=document_id)
    return document_id


def requeue_pending(app: Celery, sessions: sessionmaker[Session]) -> int:
    """Enqueue work for everything SQL shows pending; returns the number of tasks sent.

    Duplicates are harmless (tasks are idempotent), so this runs at every worker start: it covers
    a crash between commit and send, and messages a transport lost with a killed worker.
    """
    with sessions() as db:
        learning, documents = pending_learning(db), unsplit_documents(db)
    for agent_id, event_id in learning:
        enqueue_learning(app, agent_id=agent_id, event_id=event_id)
    for document_id in documents:
        enqueue_ingest(app, document_id=document_id)
    if learning or documents:
        log.info("re-enqueued learning for %d agents and %d documents found pending in SQL",
                 len(learning), len(documents))
    return len(learning) + len(documents)
