"""The one lock order (memory.db.lock_agent) and the errors a retry can clear, on both databases."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, OperationalError

from memory.admin import delete_agent
from memory.db import AgentGone, is_transient, lock_agent, retry_transient
from memory.hits import record_hits
from memory.schema import Agent, Memory
from memory.store import MemoryStore
from tests.dbs import another_backend_waits_for_a_lock
from tests.memory.test_store import DIM, spans


def test_deleting_an_agent_while_a_learner_commits_hits_to_its_memories_never_deadlocks(sessions, make_agent):
    """The learner holds the agent's lock and then updates its memory rows (hit counts); the delete waits for
    the agent's lock before it touches a row. (Deleting the memory rows first deadlocked on PostgreSQL.)"""
    agent_id = make_agent("a")
    memory_ids = MemoryStore(agent_id=agent_id, sessions=sessions, head_dim=DIM).add_spans(spans(2, 4, seed=0))
    locked, errors = threading.Event(), []

    def learner_commit() -> None:
        try:
            with sessions.begin() as db:
                lock_agent(db, agent_id)
                locked.set()
                if db.get_bind().dialect.name == "postgresql":  # the delete is waiting now
                    assert another_backend_waits_for_a_lock(sessions, timeout_s=10)
                else:
                    time.sleep(0.3)
                record_hits(db, agent_id=agent_id, hits=dict.fromkeys(memory_ids, 1))
        except Exception as exc:  # reported below, in the test's own thread
            errors.append(exc)

    learner = threading.Thread(target=learner_commit)
    learner.start()
    assert locked.wait(30)
    with sessions.begin() as db:
        delete_agent(db, agent_id=agent_id)
    learner.join(30)
    assert errors == []
    with sessions() as db:
        assert db.get(Agent, agent_id) is None
        assert db.scalar(select(func.count()).select_from(Memory).where(Memory.agent_id == agent_id)) == 0


def test_work_after_the_delete_finds_the_agent_gone(sessions, make_agent):
    agent_id = make_agent("a")
    with sessions.begin() as db:
        delete_agent(db, agent_id=agent_id)
    for exclusive in (False, True):
        with pytest.raises(AgentGone, match=f"agent {agent_id}"), sessions.begin() as db:
            lock_agent(db, agent_id, exclusive=exclusive)


def _postgres_error(sqlstate: str) -> OperationalError:
    cause = psycopg.errors.lookup(sqlstate)("conflict")
    return OperationalError("UPDATE ...", {}, cause)


@pytest.mark.parametrize(("error", "transient"), [
    (_postgres_error("40P01"), True),  # deadlock detected
    (_postgres_error("40001"), True),  # serialization failure
    (_postgres_error("55P03"), True),  # lock not available
    (OperationalError("INSERT ...", {}, Exception("database is locked")), True),  # SQLite, past its busy timeout
    (_postgres_error("08006"), False),  # the connection failed: no retry of ours brings it back
    (IntegrityError("INSERT ...", {}, Exception("UNIQUE constraint failed")), False),
    (ValueError("not a database error"), False),
])
def test_only_conflicts_are_transient(error, transient):
    assert is_transient(error) is transient


def test_retry_runs_a_transaction_again_until_it_goes_through_and_gives_up_after_its_attempts():
    calls = []

    def conflicted_twice() -> str:
        calls.append(1)
        if len(calls) <= 2:
            raise _postgres_error("40P01")
        return "done"

    assert retry_transient(conflicted_twice, first_delay_s=0.001) == "done" and len(calls) == 3

    def always() -> None:
        calls.append(1)
        raise _postgres_error("40001")

    calls.clear()
    with pytest.raises(OperationalError):
        retry_transient(always, attempts=3, first_delay_s=0.001)
    assert len(calls) == 3

    def broken() -> None:
        calls.append(1)
        raise _postgres_error("08006")

    calls.clear()
    with pytest.raises(OperationalError):
        retry_transient(broken, first_delay_s=0.001)
    assert len(calls) == 1  # not a conflict: raised at once
