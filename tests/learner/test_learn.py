"""The learn path's database-level guarantees: exactly once, in id order, everything in one commit."""

from __future__ import annotations

import itertools

import torch
from sqlalchemy import select

from learner.learn import LearnerCache, learn_through
from learner.versions import list_versions
from memory.eventlog import append_events
from memory.index import IndexConfig
from memory.schema import Agent, Document, Event, StreamSession
from memory.store import StoreConfig
from models import State
from tests.learning import (  # noqa: F401
    base_weights,
    db_url,
    empty_db_url,
    learned_weights,
    memory_rows,
    new_agent,
    received_document,
    sessions,
)


def _append(sessions, session_id, *contents: bytes) -> list[int]:
    with sessions.begin() as db:
        return [e.id for e in append_events(db, session_id=session_id, events=[("user", c) for c in contents])]


def test_duplicate_delivery_applies_the_update_once(sessions):
    agent_id, session_id = new_agent(sessions, "a")
    ids = _append(sessions, session_id, b"the first thing said", b"and a second thing")
    first = learn_through(sessions, LearnerCache(sessions), agent_id=agent_id, event_id=ids[-1], chunk_tokens=16)
    weights, rows = learned_weights(sessions, agent_id), memory_rows(sessions, agent_id)
    assert (first.events, first.version) == (2, 2)  # one transaction and version per event
    assert any(not torch.equal(w, b) for w, b in zip(weights.values(), base_weights(weights).values()))
    assert {row[0] for row in rows} == set(ids)

    # The same task again: from the worker that ran it (warm cache) and from a fresh process (cold cache).
    for cache in (LearnerCache(sessions), LearnerCache(sessions)):
        again = learn_through(sessions, cache, agent_id=agent_id, event_id=ids[-1], chunk_tokens=16)
        assert (again.events, again.version) == (0, 2)
    again = learn_through(sessions, LearnerCache(sessions), agent_id=agent_id, event_id=ids[0], chunk_tokens=16)
    assert again.events == 0
    after = learned_weights(sessions, agent_id)
    assert all(torch.equal(after[name], weights[name]) for name in weights)
    assert memory_rows(sessions, agent_id) == rows
    with sessions() as db:
        assert [(v.version, v.events_learned_through) for v in list_versions(db, agent_id)] == [
            (2, ids[1]),
            (1, ids[0]),
        ]


def test_a_later_event_learns_the_earlier_ones_first_and_in_one_batch_equals_one_by_one(sessions):
    texts = [b"alpha beta gamma", b"delta epsilon", b"zeta eta theta iota"]
    agent_a, session_a = new_agent(sessions, "batched")
    agent_b, session_b = new_agent(sessions, "one-by-one")
    ids_a, ids_b = _append(sessions, session_a, *texts), _append(sessions, session_b, *texts)
    # Out-of-order delivery: the task of the last event arrives first and learns all three, in order.
    report = learn_through(sessions, LearnerCache(sessions), agent_id=agent_a, event_id=ids_a[-1], chunk_tokens=8)
    assert report.event_ids == ids_a
    cache = LearnerCache(sessions)
    for event_id in ids_b:
        learn_through(sessions, cache, agent_id=agent_b, event_id=event_id, chunk_tokens=8)
    a, b = learned_weights(sessions, agent_a), learned_weights(sessions, agent_b)
    assert all(torch.equal(a[name], b[name]) for name in a)
    assert [row[1:] for row in memory_rows(sessions, agent_a)] == [row[1:] for row in memory_rows(sessions, agent_b)]
    with sessions() as db:
        learned = db.scalars(select(Event).where(Event.agent_id == agent_a).order_by(Event.id)).all()
        assert all(e.learned_at is not None and e.learned_bits > 0 for e in learned)
        state = State.from_bytes(db.get(StreamSession, session_a).learn_state)
        # Every token of the three turns but the last was read: role marker + bytes + end of turn each.
        assert state.position == sum(len(t) + 2 for t in texts)


def test_a_conflicting_commit_is_detected_and_the_work_redone(sessions):
    agent_id, session_id = new_agent(sessions, "a")
    first, second = _append(sessions, session_id, b"one event", b"another event")
    stale = LearnerCache(sessions)
    learn_through(sessions, stale, agent_id=agent_id, event_id=first, chunk_tokens=8)  # stale now caches version 1
    learn_through(sessions, LearnerCache(sessions), agent_id=agent_id, event_id=second, chunk_tokens=8)
    # The stale cache sees version 2 in SQL and must not build on its version-1 weights.
    assert learn_through(sessions, stale, agent_id=agent_id, event_id=second, chunk_tokens=8).events == 0
    with sessions() as db:
        assert [v.version for v in list_versions(db, agent_id)] == [2, 1]


def test_a_documents_progress_is_committed_with_learning(sessions):
    agent_id, _ = new_agent(sessions, "a")
    data = bytes(range(32, 127)) * 3
    document_id, ids = received_document(sessions, agent_id, data, chunk_bytes=100, name="ascii")
    assert len(ids) == 3
    with sessions() as db:
        assert db.get(Document, document_id).status == "queued"
    learn_through(sessions, LearnerCache(sessions), agent_id=agent_id, event_id=ids[1], chunk_tokens=64)
    with sessions() as db:
        document = db.get(Document, document_id)
        assert (document.status, document.bytes_processed) == ("learning", 200)
        stream = db.get(StreamSession, db.get(Event, ids[0]).session_id)
        assert stream.learn_state is not None  # the next chunk continues from it
    learn_through(sessions, LearnerCache(sessions), agent_id=agent_id, event_id=ids[2], chunk_tokens=64)
    with sessions() as db:
        assert db.get(Document, document_id).status == "learned"
        # A learned document reads nothing more: its learner state is not kept.
        stream = db.get(StreamSession, db.get(Event, ids[0]).session_id)
        assert (stream.learn_state, stream.learn_last_token) == (None, None)
    rows = memory_rows(sessions, agent_id)
    # The spans tile the document's byte stream (the first input is the document marker, not a byte).
    assert rows[0][1] == 0 and rows[-1][2] == len(data) - 1
    assert all(a[2] == b[1] for a, b in itertools.pairwise(rows))


def test_the_learner_opens_each_agent_s_memory_with_the_configured_store(sessions):
    agent_id, _ = new_agent(sessions, "a")
    config = StoreConfig(index=IndexConfig(nprobe=3))
    with sessions() as db:
        agent = db.get(Agent, agent_id)
        cached = LearnerCache(sessions, store_config=config).get(agent, version=0)
    assert cached.store.config == config


def _learn_turns(sessions, learning: dict | None) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], int]:
    """An agent learns a user turn, then its reply: the weights after each, and the reply's event id."""
    agent_id, session_id = new_agent(sessions, f"replies-{learning}", learning)
    with sessions.begin() as db:
        user, reply = [e.id for e in append_events(db, session_id=session_id, events=[
            ("user", b"what colour is the ferry?"), ("assistant", b"the ferry is painted a deep green")])]
    cache = LearnerCache(sessions)
    learn_through(sessions, cache, agent_id=agent_id, event_id=user, chunk_tokens=16)
    after_user = learned_weights(sessions, agent_id)
    learn_through(sessions, cache, agent_id=agent_id, event_id=reply, chunk_tokens=16)
    return after_user, learned_weights(sessions, agent_id), reply


def test_an_agent_reads_its_own_replies_but_learns_only_from_what_it_is_told(sessions):
    after_user, after_reply, reply = _learn_turns(sessions, None)
    assert any(not torch.equal(w, b) for w, b in zip(after_user.values(), base_weights(after_user).values()))
    assert all(torch.equal(after_reply[name], after_user[name]) for name in after_user)  # read, not a target
    with sessions() as db:
        event = db.get(Event, reply)
        assert event.learned_at is not None and event.learned_bits > 0  # scored all the same (the prequential figure)
        assert db.scalar(select(StreamSession.learn_last_token).where(StreamSession.id == event.session_id))
    # The choice is the agent's: with learn_from_replies the same reply is a target.
    after_user, after_reply, _ = _learn_turns(sessions, {"learn_from_replies": True})
    assert any(not torch.equal(after_reply[name], after_user[name]) for name in after_user)
