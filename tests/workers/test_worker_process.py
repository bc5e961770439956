"""Real `lifelong worker` processes on each broker: order per agent, duplicates, kill -9 mid-task."""

from __future__ import annotations

import os
import signal

import pytest
import torch
from sqlalchemy import create_engine, func, select, text

from learner.learn import LearnerCache, learn_through
from memory.db import make_engine, make_session_factory
from memory.eventlog import append_events
from memory.schema import Document, Event, WeightVersion
from tests.dbs import held_by_a_writer
from tests.learning import FAST_LEARNING, TINY, learned_weights, memory_rows, new_agent
from tests.workers.conftest import children, wait_for
from workers.submit import DocumentUpload, enqueue_learning, submit_events

TURNS = [b"first of all, the weather", b"second: it rained", b"third, and then it cleared up in the evening"]


@pytest.fixture
def sessions(deployment):
    engine = make_engine(deployment.settings.resolved_database_url)
    yield make_session_factory(engine)
    engine.dispose()


def _learned(sessions, agent_ids) -> bool:
    with sessions() as db:
        return not db.scalar(select(func.count()).select_from(Event).where(
            Event.agent_id.in_(agent_ids), Event.learned_at.is_(None)))


def _document_status(sessions, document_id: int) -> str:
    with sessions() as db:
        return db.get(Document, document_id).status


def _reference(tmp_path, turns, base: str = TINY, learning: dict | None = None) -> tuple[dict[str, torch.Tensor], list]:
    """Weights and memory rows of the same turns learned one by one in this process, on SQLite."""
    from memory.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'reference.db'}"
    upgrade(url)
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    agent_id, session_id = new_agent(sessions, "reference", learning, base=base)
    cache = LearnerCache(sessions)
    for turn in turns:
        with sessions.begin() as db:
            event_id = append_events(db, session_id=session_id, events=[("user", turn)])[0].id
        learn_through(sessions, cache, agent_id=agent_id, event_id=event_id, chunk_tokens=64)
    result = learned_weights(sessions, agent_id), memory_rows(sessions, agent_id)
    engine.dispose()
    return result


def _assert_learned_like(sessions, agent_id, reference) -> None:
    weights, rows = reference
    got = learned_weights(sessions, agent_id)
    assert all(torch.equal(got[name], weights[name]) for name in weights), "weights differ from one-by-one learning"
    assert [row[1:] for row in memory_rows(sessions, agent_id)] == [row[1:] for row in rows]


def test_a_worker_learns_two_interleaved_agents_in_order(deployment, start_worker, sessions, tmp_path):
    app = deployment.app()
    agents = [new_agent(sessions, name) for name in ("ada", "bob")]
    ids: dict[int, list[int]] = {agent_id: [] for agent_id, _ in agents}
    with sessions.begin() as db:  # interleaved: ada, bob, ada, bob, ...
        for turn in TURNS:
            for agent_id, session_id in agents:
                ids[agent_id].append(append_events(db, session_id=session_id, events=[("user", turn)])[0].id)
    # Delivered newest first, each twice: neither order nor duplicates may change what is learned.
    for position in reversed(range(len(TURNS))):
        for agent_id, _ in agents:
            for _ in range(2):
                enqueue_learning(app, agent_id=agent_id, event_id=ids[agent_id][position])
    reader, _ = new_agent(sessions, "cy")
    upload = DocumentUpload(
        app, sessions, agent_id=reader, chunk_bytes=deployment.settings.chunk_bytes, name="turns.txt"
    )
    upload.write(b"".join(TURNS))
    document_id = upload.finish()
    worker = start_worker(deployment, concurrency=2)
    pool = wait_for(lambda: children(worker.pid), "the worker's pool processes", worker)
    # Learning yields the cores to serving: the worker and its pool run below this process's priority.
    expected = max(os.getpriority(os.PRIO_PROCESS, 0), deployment.settings.worker_nice)
    assert deployment.settings.worker_nice == 10
    assert [os.getpriority(os.PRIO_PROCESS, pid) for pid in (worker.pid, *pool)] == [expected] * (1 + len(pool))
    wait_for(lambda: _learned(sessions, list(ids)), "every event learned", worker)
    wait_for(lambda: _document_status(sessions, document_id) == "learned", "the document learned", worker)

    if deployment.name != "redis":  # kombu's SQL transport kept a row per delivered task, forever
        wait_for(lambda: _delivered_sql_messages(deployment) == 0, "the delivered messages deleted", worker)

    reference = _reference(tmp_path, TURNS)
    for agent_id, event_ids in ids.items():
        with sessions() as db:
            chain = db.execute(
                select(WeightVersion.version, WeightVersion.parent_version, WeightVersion.events_learned_through)
                .where(WeightVersion.agent_id == agent_id)
                .order_by(WeightVersion.version)
            ).all()
        assert [tuple(row) for row in chain] == [(i + 1, i, event_id) for i, event_id in enumerate(event_ids)]
        assert [row[0] for row in memory_rows(sessions, agent_id)] == sorted(
            row[0] for row in memory_rows(sessions, agent_id)
        )
        _assert_learned_like(sessions, agent_id, reference)


def _delivered_sql_messages(deployment) -> int:
    """Rows of the SQL broker that were handed to a worker (kombu marks them invisible)."""
    engine = create_engine(deployment.settings.resolved_broker_url.removeprefix("sqla+"))
    try:
        with engine.connect() as connection:
            return connection.scalar(text("SELECT count(*) FROM kombu_message WHERE visible = 0"))
    finally:
        engine.dispose()


def _imported_base(directory) -> str:
    """A tiny random Llama GGUF: an imported model, whose memory rows hold every memory layer's pairs."""
    from tests.models.hf_reference import tiny_llama
    from tests.models.test_import_gguf import write_gguf
    from tests.models.tiny_vocab import tiny_chatml_spec

    spec = tiny_chatml_spec()
    return str(write_gguf(directory / "tiny-chat.gguf", tiny_llama(vocab_size=len(spec.tokens)), spec, "llama"))


@pytest.mark.parametrize(("victim", "base"), [("pool process", "small"), ("whole worker", "small"),
                                              ("pool process", "imported"), ("whole worker", "imported, gated")])
def test_kill_9_mid_learn_redelivers_and_applies_exactly_once(deployment, start_worker, sessions, tmp_path, victim,
                                                              base):
    app = deployment.app()
    # "gated": the behavioural gate falls due on the event, so the kill lands in a gated publish.
    learning = {**FAST_LEARNING, "gate_every": 1} if base.endswith("gated") else None
    base = TINY if base == "small" else _imported_base(tmp_path)
    agent_id, session_id = new_agent(sessions, "ada", learning, base=base)
    # The pause between learning and committing puts the kill after the work and before the commit.
    worker = start_worker(deployment, LIFELONG_TEST_LEARN_COMMIT_DELAY_S="5")
    wait_for(lambda: children(worker.pid), "the worker's pool process", worker)
    submit_events(app, sessions, session_id=session_id, events=[("user", TURNS[0])])
    # Inside the commit's pause, its lock held: a kill any sooner can land before the pool process has taken the
    # task, which billiard then drops without a redelivery (seen under load).
    wait_for(lambda: held_by_a_writer(sessions.kw["bind"], agent_id), "the learner inside its commit", worker)
    assert not _learned(sessions, [agent_id]), "the kill must land before the commit; lengthen the pause"
    if victim == "pool process":
        # The parent sees its child die and puts the task back on the queue (reject on worker loss).
        os.kill(children(worker.pid)[0], signal.SIGKILL)
    else:
        # Everything dies; a new worker gets the task back: from Redis after the visibility timeout,
        # from the SQL transport (which loses a dead consumer's message) through the start-up requeue.
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        assert not _learned(sessions, [agent_id])
        worker = start_worker(deployment, LIFELONG_TEST_LEARN_COMMIT_DELAY_S="0")
    wait_for(lambda: _learned(sessions, [agent_id]), "the event learned after the kill", worker)

    with sessions() as db:
        [version] = db.scalars(select(WeightVersion).where(WeightVersion.agent_id == agent_id)).all()
    assert (version.gate is not None) == (learning is not None), version.gate
    _assert_learned_like(sessions, agent_id, _reference(tmp_path, TURNS[:1], base, learning))
