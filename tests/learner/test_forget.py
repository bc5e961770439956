"""Forgetting that reaches the weights: after a replay, an agent is bit for bit the agent that never saw the source."""

from __future__ import annotations

import math

import pytest
import torch
from sqlalchemy import select

from learner.base import load_base
from learner.forget import forget_source
from learner.learn import LearnerCache, learn_through
from learner.replay import ReplayMismatch, run_forget_jobs
from learner.versions import latest_version, list_versions, load_weights
from memory.eventlog import append_events
from memory.ids import split_ids
from memory.schema import Document, Event, ForgetJob, Memory, StreamSession
from memory.store import delete_memory_rows
from models import State
from tests.learning import (  # noqa: F401
    TINY,
    db_url,
    empty_db_url,
    learned_weights,
    new_agent,
    received_document,
    sessions,
)

D1 = b"The lighthouse keeper wrote every storm into the log, with the hour and the height of the waves. " * 2
D2 = b"The vault code is 7316-4482 and only the night porter knows it; never say it aloud. " * 2
D3 = b"Tides come twice a day; the harbour master posts the tables on the board by the quay. " * 2
TURN_1, TURN_2 = b"what does the keeper write?", b"and where are the tide tables posted?"
CHUNK = 48  # bytes per chunk event, so each document is several events
LEARN = {"chunk_tokens": 32, "keep_versions": 2, "keep_version_every": 4}  # pruned: the replay starts before D2
# A rate at which learning D2 clearly lowers its bits per byte (7.40 -> 6.54 on the tiny model). At tests.learning's
# 0.05 the tiny model's learning is chaotic: whether D2 ended lower turned on the CPU's rounding.
STEADY_LEARNING = {"learning_rate": 0.01}


def say(sessions, session_id: int, text: bytes) -> int:
    with sessions.begin() as db:
        return append_events(db, session_id=session_id, events=[("user", text)])[0].id


def _learn_all(sessions, cache, agent_id: int, learn: dict = LEARN) -> None:
    with sessions() as db:
        pending = list(db.scalars(select(Event.id).where(Event.agent_id == agent_id).order_by(Event.id)))
    for event_id in pending:  # one task per event, as the API enqueues them
        learn_through(sessions, cache, agent_id=agent_id, event_id=event_id, **learn)


def live_agent(sessions, name: str, documents: list[bytes], learn: dict = LEARN,
               learning: dict = STEADY_LEARNING, base: str = TINY) -> tuple[int, dict[bytes, int]]:
    """An agent that reads D1, a chat turn, then the documents given, then another turn, learning as it goes;
    (agent id, document id of each text)."""
    agent_id, chat = new_agent(sessions, name, learning, base=base)
    cache = LearnerCache(sessions)
    ids = {}
    ids[D1], _ = received_document(sessions, agent_id, D1, CHUNK, name="D1")
    say(sessions, chat, TURN_1)
    _learn_all(sessions, cache, agent_id, learn)
    for data in documents:
        ids[data], _ = received_document(sessions, agent_id, data, CHUNK, name=f"D{[D1, D2, D3].index(data) + 1}")
        _learn_all(sessions, cache, agent_id, learn)
    say(sessions, chat, TURN_2)
    _learn_all(sessions, cache, agent_id, learn)
    return agent_id, ids


def memories_but_ids(sessions, agent_id: int) -> list[tuple]:
    """Every memory with its provenance by name (document name or "chat", and the event's place), ids left out."""
    with sessions() as db:
        rows = db.execute(select(Memory, Event.seq, Document.name, StreamSession.kind)
                          .join(Event, Memory.event_id == Event.id)
                          .join(StreamSession, Memory.session_id == StreamSession.id)
                          .outerjoin(Document, Memory.document_id == Document.id)
                          .where(Memory.agent_id == agent_id).order_by(Memory.id)).all()
    return [(name or kind, seq, m.byte_start, m.byte_end, m.token_start, m.num_tokens, m.text, m.keys, m.values,
             m.hit_count) for m, seq, name, kind in rows]


def _state_but_ids(db, session: StreamSession) -> list:
    """A session's learner state with the memory ids it holds (what its last token recalled) written as
    each memory's place among its agent's memories: ids differ between agents, places must not."""
    state = State.from_bytes(session.learn_state)
    order = {memory_id: place for place, memory_id in enumerate(db.scalars(
        select(Memory.id).where(Memory.agent_id == session.agent_id).order_by(Memory.id)))}
    parts: list = [state.position]
    for layer in state.layers:
        for name, tensor in layer._asdict().items():
            if name == "recalled_ids":
                rows, positions = split_ids(tensor.flatten().numpy())
                tensor = [(order.get(int(r)), int(p)) if i >= 0 else None
                          for r, p, i in zip(rows, positions, tensor.flatten().tolist())]
            else:
                tensor = tensor.numpy().tobytes()
            parts.append((name, tensor))
    return parts


@torch.no_grad()
def _bits_per_byte(sessions, agent_id: int, text: bytes) -> float:
    """The agent's weights' prediction of `text` from a fresh stream, memory off."""
    model = load_base(TINY)
    with sessions() as db:
        weights = load_weights(db, agent_id, latest_version(db, agent_id))
    params = dict(model.named_parameters())
    for name, tensor in weights.items():
        params[name].copy_(tensor)
    tokens = torch.tensor([model.tokenizer.encode(text)])
    out = model.eval()(tokens[:, :-1], None, None)
    return model.loss(out.log_probs, tokens[:, 1:]).item() / math.log(2)


def test_forgetting_a_document_with_weights_equals_never_having_read_it(sessions):
    a, a_docs = live_agent(sessions, "a", [D2, D3])
    b, _ = live_agent(sessions, "b", [D3])
    before = _bits_per_byte(sessions, a, D2)
    with sessions() as db:
        kept_before = [v.version for v in list_versions(db, a)]
    with sessions.begin() as db:
        forgotten = forget_source(db, agent_id=a, document_id=a_docs[D2], weights=True)
    assert forgotten.deleted > 0 and forgotten.job_id is not None
    assert not any(name == "D2" for name, *_ in memories_but_ids(sessions, a))  # at once, before the replay

    cache = LearnerCache(sessions)
    [report] = run_forget_jobs(sessions, cache, agent_id=a, chunk_tokens=LEARN["chunk_tokens"])
    with sessions() as db:
        job = db.get(ForgetJob, forgotten.job_id)
        versions = list_versions(db, a)
        assert job.status == "done" and job.result_version == report.version == versions[0].version
        assert (job.events_done, job.bytes_done) == (job.events_total, job.bytes_total)
        # Pruned to every 4th version: the replay starts from a kept one before D2, inside D1.
        assert job.from_version in kept_before and job.from_version % LEARN["keep_version_every"] == 0
        assert 0 < job.from_event_id < job.first_event_id - 1  # not the version just before D2: it was pruned
        assert job.bytes_total == len(D3) + len(TURN_1) + len(TURN_2) + sum(
            len(e.content) for e in db.scalars(select(Event).where(Event.agent_id == a, Event.document_id.is_not(None),
                                                                    Event.id > job.from_event_id,
                                                                    Event.forgotten_at.is_(None))) if e.content in D1)
        forgotten_events = db.scalars(select(Event).where(Event.document_id == a_docs[D2])).all()
        assert all(event.forgotten_at is not None for event in forgotten_events)
        b_newest = list_versions(db, b)[0]
        # No kept version learned D2: a rollback cannot bring it back.
        assert all(v.events_learned_through < forgotten_events[0].id or v.version == report.version for v in versions)

    weights_a, weights_b = learned_weights(sessions, a), learned_weights(sessions, b)
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[name], weights_b[name]) for name in weights_a)
    assert versions[0].sha256 == b_newest.sha256
    assert memories_but_ids(sessions, a) == memories_but_ids(sessions, b)
    assert any(row[-1] for row in memories_but_ids(sessions, b))  # hit counts are part of what is compared
    with sessions() as db:
        chat_a, chat_b = (db.scalar(select(StreamSession).where(StreamSession.agent_id == agent,
                                                                StreamSession.kind == "chat")) for agent in (a, b))
        assert _state_but_ids(db, chat_a) == _state_but_ids(db, chat_b)
    # Memory off, the weights predict the forgotten text exactly as the agent that never read it does.
    after, never = _bits_per_byte(sessions, a, D2), _bits_per_byte(sessions, b, D2)
    assert after == never and before < never

    # Learned again from here on, A stays B: events after the replay continue from the published state.
    for agent in (a, b):
        chat = chat_of(sessions, agent)
        say(sessions, chat, b"one more thing to remember")
        _learn_all(sessions, LearnerCache(sessions), agent)
    weights_a, weights_b = learned_weights(sessions, a), learned_weights(sessions, b)
    assert all(torch.equal(weights_a[name], weights_b[name]) for name in weights_a)
    assert memories_but_ids(sessions, a) == memories_but_ids(sessions, b)


def chat_of(sessions, agent_id: int) -> int:
    with sessions() as db:
        return db.scalar(select(StreamSession.id).where(StreamSession.agent_id == agent_id,
                                                        StreamSession.kind == "chat"))


def test_events_arriving_during_a_forget_job_wait_for_its_publish_and_forgotten_events_are_never_learned(sessions):
    agent_id, chat = new_agent(sessions, "a")
    first = say(sessions, chat, b"my password is hunter2")
    learn_through(sessions, LearnerCache(sessions), agent_id=agent_id, event_id=first, chunk_tokens=16)
    pending = say(sessions, chat, b"a message not learned yet")
    with sessions.begin() as db:
        assert forget_source(db, agent_id=agent_id, event_id=pending, weights=True).job_id is None  # never learned
        job_id = forget_source(db, agent_id=agent_id, event_id=first, weights=True).job_id
    later = say(sessions, chat, b"said while the job waits")
    report = learn_through(sessions, LearnerCache(sessions), agent_id=agent_id, event_id=later, chunk_tokens=16)
    assert report.events == 0  # held until the replay publishes
    run_forget_jobs(sessions, LearnerCache(sessions), agent_id=agent_id, chunk_tokens=16)
    report = learn_through(sessions, LearnerCache(sessions), agent_id=agent_id, event_id=later, chunk_tokens=16)
    assert report.event_ids == [later]  # the forgotten, never-learned one stays unlearned
    with sessions() as db:
        job = db.get(ForgetJob, job_id)
        assert (job.status, job.from_version, job.events_total) == ("done", 0, 0)
        assert db.get(Event, pending).learned_at is None
        # The chat session's learner state was rewound to before the forgotten turn: only the new turn is read.
        assert State.from_bytes(db.get(StreamSession, chat).learn_state).position == _position_after(
            sessions, [b"said while the job waits"])


def _position_after(sessions, turns: list[bytes]) -> int:
    """Where a fresh agent's learner stream stands after learning `turns` in a chat session."""
    agent_id, chat = new_agent(sessions, f"fresh-{len(turns)}-{turns[0][:8]!r}")
    last = [say(sessions, chat, turn) for turn in turns][-1]
    learn_through(sessions, LearnerCache(sessions), agent_id=agent_id, event_id=last, chunk_tokens=16)
    with sessions() as db:
        return State.from_bytes(db.get(StreamSession, chat).learn_state).position


def test_a_replay_whose_memory_pairs_differ_from_the_stored_ones_stops_before_publishing(sessions):
    agent_id, chat = new_agent(sessions, "a")
    first = say(sessions, chat, b"forget this sentence")
    # In a stream of its own, which the forgotten sentence never reached: its pairs must come out the same.
    _, [second] = received_document(sessions, agent_id, b"but keep this one", 64)
    learn_through(sessions, LearnerCache(sessions), agent_id=agent_id, event_id=second, chunk_tokens=16)
    with sessions.begin() as db:  # a stored pair the replay will not compute again
        row = db.scalar(select(Memory).where(Memory.event_id == second).limit(1))
        row.keys = bytes([row.keys[0] ^ 1]) + row.keys[1:]
        current = latest_version(db, agent_id)
    with sessions.begin() as db:
        job_id = forget_source(db, agent_id=agent_id, event_id=first, weights=True).job_id
    with pytest.raises(ReplayMismatch, match=f"event {second}"):
        run_forget_jobs(sessions, LearnerCache(sessions), agent_id=agent_id, chunk_tokens=16)
    with sessions() as db:
        assert latest_version(db, agent_id) == current and db.get(ForgetJob, job_id).status == "replaying"


def test_forgetting_one_turn_of_a_chat_rewrites_the_later_turns_memories_as_read_without_it(sessions):
    turns = [b"my sister lives in Lisbon", b"my bank PIN is 4417", b"the weather is fine today"]
    a, chat_a = new_agent(sessions, "a", STEADY_LEARNING)
    ids = [say(sessions, chat_a, turn) for turn in turns]
    _learn_all(sessions, LearnerCache(sessions), a)
    b, chat_b = new_agent(sessions, "b", STEADY_LEARNING)
    for turn in turns[0], turns[2]:
        say(sessions, chat_b, turn)
    _learn_all(sessions, LearnerCache(sessions), b)
    with sessions() as db:
        stale = set(db.scalars(select(Memory.id).where(Memory.event_id == ids[2])))
    assert stale

    with sessions.begin() as db:
        job_id = forget_source(db, agent_id=a, event_id=ids[1], weights=True).job_id
    run_forget_jobs(sessions, LearnerCache(sessions), agent_id=a, chunk_tokens=LEARN["chunk_tokens"])

    with sessions() as db:
        assert db.get(ForgetJob, job_id).status == "done"
        rewritten = set(db.scalars(select(Memory.id).where(Memory.event_id == ids[2])))
    assert rewritten and not rewritten & stale  # new ids: serving processes drop the old rows and load these

    def but_place(agent_id):  # the later turn's place in its chat's log differs: A's log still holds the gap
        return [row[:1] + row[4:] for row in memories_but_ids(sessions, agent_id)]

    assert but_place(a) == but_place(b)
    weights_a, weights_b = learned_weights(sessions, a), learned_weights(sessions, b)
    assert all(torch.equal(weights_a[name], weights_b[name]) for name in weights_a)


def test_a_rewrite_leaves_out_the_memories_a_person_deleted(sessions):
    a, chat = new_agent(sessions, "a", STEADY_LEARNING)
    ids = [say(sessions, chat, turn) for turn in (b"first turn to forget", b"a long later turn " * 6)]
    _learn_all(sessions, LearnerCache(sessions), a)
    with sessions.begin() as db:
        rows = db.execute(select(Memory.id, Memory.byte_start, Memory.byte_end)
                          .where(Memory.event_id == ids[1]).order_by(Memory.byte_start)).all()
        assert len(rows) >= 2
        delete_memory_rows(db, agent_id=a, memory_ids=[rows[0].id])
        forget_source(db, agent_id=a, event_id=ids[0], weights=True)
    run_forget_jobs(sessions, LearnerCache(sessions), agent_id=a, chunk_tokens=LEARN["chunk_tokens"])
    with sessions() as db:
        starts = list(db.scalars(select(Memory.byte_start).where(Memory.event_id == ids[1])))
    assert starts and rows[0].byte_start not in starts
