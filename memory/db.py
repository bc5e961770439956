"""Engines and sessions for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, event, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from memory.schema import Agent

# First key of the advisory locks this project takes on PostgreSQL (its two-key form), so they
# cannot collide with another application's locks on the same database.
ADVISORY_LOCK_NAMESPACE = 0x6C6C


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite gets WAL (readers never block the writer) and foreign keys on."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:  # pragma: no cover - trivial
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(url, pool_pre_ping=True)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def chat_turn_lock(sessions: sessionmaker[Session], session_id: int) -> Iterator[None]:
    """Serialise chat turns of one session across every process that serves it.

    A turn reads the session's state, appends to its log and saves the state that read it;
    two at once (two API processes, one session) would each save a state the log no longer
    matches. On PostgreSQL this is a transaction-scoped advisory lock on its own connection,
    released at the end of the turn or when a crashed process's connection drops, and it
    locks no row, so chat and learning elsewhere never wait on it. SQLite deployments run one
    API process, whose per-session thread lock already serialises its turns.
    """
    engine: Engine = sessions.kw["bind"]
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.begin() as connection:
        connection.execute(text("SELECT pg_advisory_xact_lock(:namespace, :key)"),
                           {"namespace": ADVISORY_LOCK_NAMESPACE, "key": session_id % (1 << 31)})
        yield


def lock_agent(db: Session, agent_id: int) -> None:
    """Hold the agent's learning lock until the transaction ends.

    Lock order: a learner's commit holds this while it marks events learned and updates their
    documents' rows, so any other transaction that marks events or writes a document's row
    takes it first, before those rows; the other way round, PostgreSQL aborts one of the two.
    """
    if db.get_bind().dialect.name == "postgresql":
        db.execute(select(Agent.id).where(Agent.id == agent_id).with_for_update(key_share=True))
    else:
        # SQLite: a write as the first statement takes the database's write lock (waiting for it).
        db.execute(update(Agent).where(Agent.id == agent_id).values(name=Agent.name))
