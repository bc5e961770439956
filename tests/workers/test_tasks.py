"""Task bodies in this process: permanent failures are recorded readably, transient ones retried."""

from __future__ import annotations

import pytest
import torch
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError

import workers.tasks
from learner.base import load_base
from memory.db import make_engine, make_session_factory
from memory.eventlog import append_events
from memory.migrate import upgrade
from memory.pair_format import FULL_PAIRS, format_for
from memory.schema import Agent, Event, Memory
from memory.store import MemoryStore, Span
from settings import Settings
from tests.learning import TINY, new_agent
from tests.models.hf_reference import tiny_llama
from tests.models.test_import_gguf import write_gguf
from tests.models.tiny_vocab import tiny_chatml_spec
from workers.app import make_app
from workers.submit import requeue_pending


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


def test_snapshots_are_due_when_the_memory_reaches_the_minimum_and_at_each_doubling():
    due = [after for after in range(0, 5000, 100) if workers.tasks.snapshot_due(after - 100, after, min_tokens=1000)]
    assert due == [1000, 1100, 2100, 4100]  # reached 1000; crossed 1024, 2048 and 4096
    assert not workers.tasks.snapshot_due(1100, 1200, min_tokens=1000)


def test_learning_past_the_minimum_writes_a_snapshot_a_store_opens_from(tmp_path, monkeypatch):
    settings = Settings(data_dir=tmp_path, chunk_bytes=64, snapshot_min_tokens=100)
    upgrade(settings.resolved_database_url)
    app = make_app(settings)
    sent = []
    monkeypatch.setattr(workers.tasks, "enqueue_snapshot", lambda app, agent_id: sent.append(agent_id))
    engine = make_engine(settings.resolved_database_url)
    sessions = make_session_factory(engine)
    agent_id, session_id = new_agent(sessions, "a")
    with sessions.begin() as db:
        first = append_events(db, session_id=session_id, events=[("user", b"x" * 50)])[0].id
    app.tasks["lifelong.learn"].apply(args=(agent_id, first)).get()
    assert sent == []  # 52 pairs stored: under the minimum
    with sessions.begin() as db:
        second = append_events(db, session_id=session_id, events=[("user", b"y" * 80)])[0].id
    app.tasks["lifelong.learn"].apply(args=(agent_id, second)).get()
    assert sent == [agent_id]

    assert app.tasks["lifelong.snapshot_memory"].apply(args=(agent_id,)).get() == {"tokens": 52 + 82}
    store = MemoryStore(agent_id=agent_id, sessions=sessions, head_dim=load_base(TINY).config.head_dim)
    assert store.load_snapshot(settings.snapshot_dir(agent_id)) and len(store) == 52 + 82
    engine.dispose()


def test_work_queued_for_a_deleted_agent_is_skipped_quietly(app, sessions, monkeypatch, caplog):
    agent_id, session_id = new_agent(sessions, "a")
    with sessions.begin() as db:
        first = append_events(db, session_id=session_id, events=[("user", b"hello")])[0].id
        second = append_events(db, session_id=session_id, events=[("user", b"again")])[0].id
    real_learn = workers.tasks.learn_through.__globals__["learn_events"]

    def deleted_while_learning(*args, **kwargs):  # the agent goes between learning and committing
        learned = real_learn(*args, **kwargs)
        with sessions.begin() as db:
            db.delete(db.get(Agent, agent_id))
        return learned

    monkeypatch.setitem(workers.tasks.learn_through.__globals__, "learn_events", deleted_while_learning)
    assert "skipped" in app.tasks["lifelong.learn"].apply(args=(agent_id, first)).get()
    assert "skipped" in app.tasks["lifelong.learn"].apply(args=(agent_id, second)).get()  # gone already
    assert not [record for record in caplog.records if record.levelname in ("ERROR", "WARNING")]
    with sessions() as db:
        assert db.get(Event, first) is None  # its log went with it; nothing was written for it


def test_an_imported_agents_older_memories_are_re_encoded_in_place_by_a_maintenance_task(app, sessions, tmp_path,
                                                                                          monkeypatch):
    spec = tiny_chatml_spec()
    base = write_gguf(tmp_path / "tiny-chat.gguf", tiny_llama(vocab_size=len(spec.tokens)), spec, "llama")
    agent_id, _ = new_agent(sessions, "imported", base=str(base))
    model = load_base(str(base))
    pairs = model(torch.arange(40)[None] % 20).memory_kv  # (1, 40, channels, D) each
    written = MemoryStore(agent_id=agent_id, sessions=sessions, head_dim=model.config.head_dim,
                          channels=model.config.memory_channels, pair_format=FULL_PAIRS)
    parts = [slice(10 * i, 10 * i + 10) for i in range(4)]
    ids = written.add_spans([Span(keys=pairs.keys[0, at], values=pairs.values[0, at], text=b"t", byte_start=i,
                                  byte_end=i + 1) for i, at in enumerate(parts)])
    with sessions.begin() as db:  # as rows from before pair formats are
        db.execute(update(Memory).values(pair_format=None))
    sent = []
    monkeypatch.setattr(app, "send_task", lambda name, args: sent.append((name, args)))
    requeue_pending(app, sessions)
    assert sent == [("lifelong.reencode_memory", (agent_id,))]

    assert app.tasks["lifelong.reencode_memory"].apply(args=(agent_id,)).get() == {"rows": 4}
    kept = format_for(model.config, attends=False)
    assert kept.keys_only
    with sessions() as db:
        rows = db.execute(select(Memory.id, Memory.keys, Memory.values, Memory.pair_format).order_by(Memory.id)).all()
    assert [row.id for row in rows] == ids and {row.pair_format for row in rows} == {kept.name}
    assert [bytes(row.keys) for row in rows] == [kept.encode(pairs.keys[0, at], None)[0] for at in parts]
    assert all(len(row.keys) == 10 * kept.bytes_per_token(model.config.memory_channels, model.config.head_dim)
               and row.values == b"" for row in rows)
    sent.clear()
    requeue_pending(app, sessions)
    assert sent == []  # done once
