"""A document received in pieces: bounded chunk events, progress while receiving, learning per batch."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select, update

from learner.learn import LearnerCache, learn_through
from memory.db import lock_agent
from memory.schema import Document, Event
from tests.dbs import another_backend_waits_for_a_lock
from tests.learning import db_url, empty_db_url, new_agent, sessions  # noqa: F401 - fixtures
from workers.submit import CHUNKS_PER_TASK, DocumentUpload


class SentTasks:
    """Stands in for the Celery app: records what would be sent."""

    def __init__(self):
        self.sent: list[tuple[str, tuple]] = []

    def send_task(self, name: str, args: tuple) -> None:
        self.sent.append((name, args))


def _document(sessions, document_id: int) -> Document:
    with sessions() as db:
        return db.get(Document, document_id)


def test_an_upload_commits_chunk_events_as_they_arrive_and_learns_them(sessions):
    agent_id, _ = new_agent(sessions, "a", learning={"learning_rate": 0.0})
    tasks = SentTasks()
    upload = DocumentUpload(tasks, sessions, agent_id=agent_id, chunk_bytes=64, name="n.txt")
    data = bytes(range(256)) * 20  # 80 chunks of 64 bytes
    for start in range(0, 1500, 100):
        upload.write(data[start : start + 100])
    receiving = _document(sessions, upload.document_id)
    assert (receiving.status, receiving.bytes_received) == ("receiving", CHUNKS_PER_TASK * 64)
    # A learner may learn arrived chunks (a chat turn's task learns every earlier event): still receiving.
    learn_through(sessions, LearnerCache(sessions), agent_id=agent_id, event_id=tasks.sent[0][1][1], chunk_tokens=64)
    assert _document(sessions, upload.document_id).status == "receiving"
    for start in range(1500, len(data), 100):
        upload.write(data[start : start + 100])
    document_id = upload.finish()

    with sessions() as db:
        chunks = db.scalars(select(Event.content).where(Event.document_id == document_id).order_by(Event.seq)).all()
        ids = db.scalars(select(Event.id).where(Event.document_id == document_id).order_by(Event.seq)).all()
    assert b"".join(chunks) == data and {len(chunk) for chunk in chunks} == {64}
    assert [args for _, args in tasks.sent] == [(agent_id, i) for i in ids[CHUNKS_PER_TASK - 1 :: CHUNKS_PER_TASK]]
    document = _document(sessions, document_id)
    assert (document.status, document.bytes_received, document.bytes_processed) == ("learning", len(data), 16 * 64)
    learn_through(sessions, LearnerCache(sessions), agent_id=agent_id, event_id=ids[-1], chunk_tokens=64)
    assert _document(sessions, document_id).status == "learned"


def test_a_broken_upload_is_failed_and_its_unlearned_chunks_are_never_learned(sessions):
    agent_id, _ = new_agent(sessions, "a")
    upload = DocumentUpload(SentTasks(), sessions, agent_id=agent_id, chunk_bytes=64)
    upload.write(b"x" * 64 * CHUNKS_PER_TASK)
    upload.fail("the client went away after 1024 bytes")
    document = _document(sessions, upload.document_id)
    assert (document.status, document.failed_reason) == ("failed", "the client went away after 1024 bytes")
    report = learn_through(sessions, LearnerCache(sessions), agent_id=agent_id, event_id=10**9, chunk_tokens=64)
    assert report.events == 0


def test_an_empty_upload_creates_nothing(sessions):
    agent_id, _ = new_agent(sessions, "a")
    upload = DocumentUpload(SentTasks(), sessions, agent_id=agent_id, chunk_bytes=64)
    try:
        upload.finish()
    except ValueError as exc:
        assert "empty" in str(exc)
    with sessions() as db:
        assert db.scalars(select(Document)).all() == []


def test_an_upload_finishing_while_a_learner_commits_waits_for_it_instead_of_deadlocking(sessions):
    """A learner holds the agent's lock, then updates the document's progress. The upload's last commit
    must take that lock before touching the document's row, or PostgreSQL aborts one of them."""
    if sessions.kw["bind"].dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time: no row locks to order")
    agent_id, _ = new_agent(sessions, "a", learning={"learning_rate": 0.0})
    upload = DocumentUpload(SentTasks(), sessions, agent_id=agent_id, chunk_bytes=64)
    upload.write(b"x" * 64 * CHUNKS_PER_TASK)  # committed: the document exists, as learners see it
    upload.write(b"tail")
    locked, errors = threading.Event(), []

    def learner_commit() -> None:
        try:
            with sessions.begin() as db:
                lock_agent(db, agent_id)
                locked.set()
                # The upload is now inside its last commit, blocked.
                assert another_backend_waits_for_a_lock(sessions, timeout_s=30), "the upload never waited"
                db.execute(update(Document).where(Document.id == upload.document_id)
                           .values(bytes_processed=Document.bytes_processed + 64))
        except Exception as exc:  # reported by the assertion below
            errors.append(exc)

    learner = threading.Thread(target=learner_commit)
    learner.start()
    locked.wait()
    try:
        document_id = upload.finish()
    except Exception as exc:  # reported by the assertion below
        errors.append(exc)
    learner.join()
    assert errors == []
    document = _document(sessions, document_id)
    assert (document.status, document.bytes_received, document.bytes_processed) == \
        ("learning", 64 * CHUNKS_PER_TASK + 4, 64)
