"""Two serving processes chatting in one session at once: turns are serialised, the log and state agree."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from agent.runtime import AgentRuntime
from memory.db import make_engine, make_session_factory
from memory.eventlog import unread_events
from memory.migrate import upgrade
from memory.schema import Agent, Event, StreamSession
from models import SamplingConfig
from settings import Settings
from tests.dbs import postgres_or_skip
from tests.learning import new_agent
from workers.app import make_app

SAMPLING = SamplingConfig(temperature=0.0, max_bytes=48, stop_at_end_of_turn=False)


@pytest.fixture
def deployment(tmp_path):
    """A PostgreSQL database (where several API processes are deployed) and a broker nobody consumes."""
    settings = Settings(data_dir=tmp_path, database_url=postgres_or_skip())
    upgrade(settings.resolved_database_url)
    engine = make_engine(settings.resolved_database_url)
    yield settings, make_session_factory(engine), make_app(settings)
    engine.dispose()


def test_simultaneous_turns_from_two_processes_take_turns_and_the_session_continues(deployment):
    settings, sessions, celery = deployment
    agent_id, session_id = new_agent(sessions, "shared")
    with sessions() as db:
        agent = db.get(Agent, agent_id)
    # Each runtime has its own in-process locks and state cache, as two API processes would.
    first, second = (AgentRuntime(agent=agent, sessions=sessions, celery=celery, settings=settings) for _ in range(2))
    start, errors = threading.Barrier(2), []

    def turn(runtime: AgentRuntime, content: bytes) -> None:
        start.wait()
        try:
            runtime.chat(session_id=session_id, content=content, sampling=SAMPLING)
        except Exception as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=turn, args=(r, m)) for r, m in ((first, b"from one"), (second, b"from two"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []

    with sessions() as db:
        roles = list(db.scalars(select(Event.role).where(Event.session_id == session_id).order_by(Event.seq)))
        row = db.get(StreamSession, session_id)
        assert unread_events(db, session_id=session_id, events_read=row.events_read) == []  # the state read it all
    assert roles == ["user", "assistant", "user", "assistant"]  # each reply follows its own message
    # Either process continues the session from what the other saved.
    first.chat(session_id=session_id, content=b"and again", sampling=SAMPLING)
    second.chat(session_id=session_id, content=b"and once more", sampling=SAMPLING)
