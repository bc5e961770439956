"""Task bodies in this process: permanent failures are recorded readably, transient ones retried."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

import workers.tasks
from learner.eventlog import append_events, create_document
from memory.db import make_engine, make_session_factory
from memory.migrate import upgrade
from memory.schema import Agent, Document, Event
from tests.learning import new_agent
from workers.app import make_app
from memory.settings import Settings


@pytest.fixture
def app(tmp_path):
    settings = Settings(data_dir=tmp_path, chunk_bytes=64)
    upgrade(settings.resolved_database_url)
    return make_app(settings)


@pytest.fixture
def sessions(app):
    engine = make_engine(app.conf.lifelong_settings.resolved_database_url)
    yield make_session_factory(engine)
    engine.dispose()


def test_a_permanent_error_marks_the_events_failed_with_a_readable_reason(app, sessions):
    agent_id, session_id = new_agent(sessions, "a")
    with sessions.begin() as db:
        db.get(Agent, agent_id).base_checkpoint = "/nowhere/model"
        event_id = append_events(db, session_id=session_id, events=[("user", b"hello")])[0].id
    result = app.tasks["lifelong.learn"].apply(args=(agent_id, event_id)).get()
    assert result["failed"].startswith("FileNotFoundError: /nowhere/model is not a saved model")
    with sessions() as db:
        event = db.get(Event, event_id)
        assert (event.learned_at, event.failed_reason) == (None, result["failed"])


def test_a_transient_error_is_retried_and_then_learns(app, sessions, monkeypatch):
    agent_id, session_id = new_agent(sessions, "a")
    with sessions.begin() as db:
        event_id = append_events(db, session_id=session_id, events=[("user", b"hello")])[0].id
    real, calls = workers.tasks.learn_through, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("UPDATE agents", {}, Exception("database is locked"))
        return real(*args, **kwargs)

    monkeypatch.setattr(workers.tasks, "learn_through", flaky)
    monkeypatch.setattr(workers.tasks.random, "uniform", lambda a, b: 0.0)  # no backoff wait in the test
    result = app.tasks["lifelong.learn"].apply(args=(agent_id, event_id)).get()
    assert len(calls) == 2 and result["events"] == 1
    with sessions() as db:
        assert db.get(Event, event_id).failed_reason is None


def test_ingest_splits_a_document_once(app, sessions):
    agent_id, _ = new_agent(sessions, "a")
    with sessions.begin() as db:
        document_id = create_document(db, agent_id=agent_id, data=b"x" * 150).id
    for _ in range(2):
        assert app.tasks["lifelong.ingest"].apply(args=(document_id,)).get() == {"chunks": 3}
    with sessions() as db:
        chunks = db.scalars(select(Event.content).where(Event.document_id == document_id).order_by(Event.seq)).all()
        assert chunks == [b"x" * 64, b"x" * 64, b"x" * 22]
        assert db.get(Document, document_id).status == "queued"
