"""Engines and sessions for SQLite (embedded default) and PostgreSQL; the agent lock every writer takes
first, and which database errors a retry can clear."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from sqlalchemy import Engine, create_engine, event, select, text, update
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from memory.schema import Agent

log = logging.getLogger(__name__)
T = TypeVar("T")

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


class AgentGone(LookupError):
    """The agent was deleted (or never existed): work on its rows has nothing left to do."""


def lock_agent(db: Session, agent_id: int, *, exclusive: bool = False) -> None:
    """Hold the agent's lock until the transaction ends; AgentGone if the agent is not there (any more).

    The one lock order: every transaction that writes an agent's rows (events, sessions, documents,
    memories, versions, jobs) takes this first, before any of those rows. Writers of one agent take it
    one at a time (on PostgreSQL FOR NO KEY UPDATE, held for a commit's few milliseconds; other agents'
    writers never wait on it); deleting the agent takes it `exclusive` (FOR UPDATE), so a delete waits
    for the writer already in and the writers after it find the agent gone, instead of each holding rows
    the other needs (a deadlock PostgreSQL breaks by failing one of them). SQLite has one write lock per
    database: a write as the transaction's first statement takes it, waiting for it.
    """
    if db.get_bind().dialect.name == "postgresql":
        query = select(Agent.id).where(Agent.id == agent_id)
        found = db.scalar(query.with_for_update() if exclusive else query.with_for_update(key_share=True))
    else:
        found = db.execute(update(Agent).where(Agent.id == agent_id).values(name=Agent.name)).rowcount
    if not found:
        raise AgentGone(f"agent {agent_id} does not exist (deleted?)")


# SQLSTATEs a retry of the whole transaction can clear: deadlock, serialization failure, lock not available.
TRANSIENT_SQLSTATES = frozenset({"40P01", "40001", "55P03"})


def is_transient(exc: BaseException) -> bool:
    """Whether `exc` is a database conflict that running the same transaction again can clear."""
    if not isinstance(exc, DBAPIError):
        return False
    if getattr(exc.orig, "sqlstate", None) in TRANSIENT_SQLSTATES:
        return True
    # SQLite: another writer held the database past the busy timeout.
    return isinstance(exc, OperationalError) and "database is locked" in str(exc.orig)


def retry_transient(work: Callable[[], T], *, attempts: int = 4, first_delay_s: float = 0.05) -> T:
    """`work()`, run again (after a jittered, doubling pause) while it fails with a transient database error;
    the last attempt's error is raised. `work` must be a whole transaction: everything it did was rolled back."""
    for attempt in range(1, attempts + 1):
        try:
            return work()
        except DBAPIError as exc:
            if attempt == attempts or not is_transient(exc):
                raise
            delay = first_delay_s * 2 ** (attempt - 1) * random.uniform(0.5, 1.5)
            log.info("transient database error (%s); retrying in %.2f s", exc.orig, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")
