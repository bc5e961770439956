"""The behavioural gate (learner.gate): a version whose weights do worse than the last good ones is published
but never served, learning goes on from the last good weights, and forgetting stays exact with the gate on."""

from __future__ import annotations

import torch
from sqlalchemy import select

from agent.serving import ServingModel, load_serving_base
from learner.base import load_base
from learner.forget import forget_source
from learner.gate import PREFIX, Scores, due, judge, probe, serving_weights
from learner.learn import LearnerCache, learn_through
from learner.replay import run_forget_jobs
from learner.versions import load_weights
from memory.eventlog import append_events
from memory.schema import Event, WeightVersion
from models.static_decode import StaticDecoder
from tests.learner.test_forget import D2, D3, LEARN, STEADY_LEARNING, live_agent
from tests.learning import (  # noqa: F401
    db_url,
    empty_db_url,
    learned_weights,
    memory_rows,
    new_agent,
    sessions,
)
from tests.models.hf_reference import tiny_llama
from tests.models.test_import_gguf import write_gguf
from tests.models.tiny_vocab import tiny_chatml_spec

TEXT = b"the keeper of the lighthouse writes every storm into the log, with the hour and the waves"
# One step at the largest rate allowed wrecks the shipped model's reading of any text (2.5 bits per byte of the
# gate's text become 18): the gate must refuse it. (The tiny preset's random weights only get better.)
WRECKING = {"learning_rate": 1.0, "gate_every": 1}
SMALL = "small"


def _learn_one(sessions, name: str, learning: dict) -> tuple[int, int]:
    agent_id, session_id = new_agent(sessions, name, learning, base=SMALL)
    with sessions.begin() as db:
        event_id = append_events(db, session_id=session_id, events=[("user", TEXT)])[0].id
    learn_through(sessions, LearnerCache(sessions), agent_id=agent_id, event_id=event_id, chunk_tokens=32)
    return agent_id, event_id


def _served(sessions, agent_id: int) -> dict[str, torch.Tensor]:
    """The learned parameters a serving process reads for the agent's newest version."""
    serving = ServingModel(sessions=sessions, agent_id=agent_id, base=load_base(SMALL))
    params = dict(serving.current().model.named_parameters())
    with sessions() as db:
        names = [name for name in load_weights(db, agent_id, serving.version) if not name.startswith(PREFIX)]
    return {name: params[name].detach() for name in names}


def _base(names) -> dict[str, torch.Tensor]:
    params = dict(load_base(SMALL).named_parameters())
    return {name: params[name].detach() for name in names}


def test_a_version_the_gate_refuses_is_published_with_its_reason_but_never_served(sessions):
    agent_id, event_id = _learn_one(sessions, "gated", WRECKING)
    with sessions() as db:
        [version] = db.scalars(select(WeightVersion).where(WeightVersion.agent_id == agent_id)).all()
        assert db.get(Event, event_id).learned_at is not None  # the event is not lost
        weights = load_weights(db, agent_id, version.version)
    assert version.gate["passed"] is False and "bits per byte" in version.gate["reason"], version.gate
    assert version.gate["scores"]["bits_per_byte"] > version.gate["last_good_scores"]["bits_per_byte"]
    assert {row[0] for row in memory_rows(sessions, agent_id)} == {event_id}  # and neither are its memories
    served, base = _served(sessions, agent_id), _base(serving_weights(weights))
    assert served and all(torch.equal(served[name], base[name]) for name in served)
    # Learning goes on from the last good weights: the base's, here.
    learned = learned_weights(sessions, agent_id)
    assert all(torch.equal(learned[name], base[name]) for name in base)

    # Without the gate the same step is served: the refusal is what kept it out.
    ungated, _ = _learn_one(sessions, "ungated", {"learning_rate": 1.0})
    served = _served(sessions, ungated)
    assert any(not torch.equal(served[name], base[name]) for name in served)


def test_a_version_the_gate_passes_is_served():
    good = Scores(answered=3, degenerate=0, bits_per_byte=2.0)
    assert judge(Scores(3, 0, 2.02), good) is None  # within the probes' noise
    assert judge(Scores(2, 0, 2.0), good) is None
    assert "plain questions" in judge(Scores(1, 0, 2.0), good)
    assert "degenerate" in judge(Scores(3, 1, 2.0), good)
    assert "bits per byte" in judge(Scores(3, 0, 2.05), good)
    assert [n for n in range(10) if due(n, 1, 4)] == [3, 7] and not due(5, 1, 0)


def test_a_small_step_passes_the_gate_and_serves(sessions):
    agent_id, _ = _learn_one(sessions, "careful", {"learning_rate": 1e-4, "gate_every": 1})
    with sessions() as db:
        [version] = db.scalars(select(WeightVersion).where(WeightVersion.agent_id == agent_id)).all()
    assert version.gate["passed"] is True and version.gate["reason"] is None
    served, learned = _served(sessions, agent_id), learned_weights(sessions, agent_id)
    assert all(torch.equal(served[name], learned[name]) for name in served)
    assert any(not torch.equal(served[name], base) for name, base in _base(served).items())


def test_forgetting_with_the_gate_on_equals_never_having_read_it(sessions):
    gated = {**STEADY_LEARNING, "gate_every": 3}
    a, documents = live_agent(sessions, "a", [D2, D3], learning=gated)
    b, _ = live_agent(sessions, "b", [D3], learning=gated)
    with sessions() as db:
        verdicts = [g for g in db.scalars(select(WeightVersion.gate).where(WeightVersion.agent_id == a)) if g]
    assert verdicts  # the gate fell due while it learned
    with sessions.begin() as db:
        forget_source(db, agent_id=a, document_id=documents[D2], weights=True)
    run_forget_jobs(sessions, LearnerCache(sessions), agent_id=a, chunk_tokens=LEARN["chunk_tokens"])
    forgot, never = learned_weights(sessions, a), learned_weights(sessions, b)
    assert forgot.keys() == never.keys() and all(torch.equal(forgot[name], never[name]) for name in never)


def test_forgetting_an_imported_agents_adapters_with_the_gate_on_equals_never_having_read_it(sessions, tmp_path):
    """An imported base learns adapters (models.adapters), each learner drawing its own: the replay's must be
    the first learner's, bit for bit."""
    from tests.models.hf_reference import tiny_llama
    from tests.models.test_import_gguf import write_gguf
    from tests.models.tiny_vocab import tiny_chatml_spec

    spec = tiny_chatml_spec()
    base = str(write_gguf(tmp_path / "tiny-chat.gguf", tiny_llama(vocab_size=len(spec.tokens)), spec, "llama"))
    gated = {**STEADY_LEARNING, "gate_every": 3}
    a, documents = live_agent(sessions, "a", [D2, D3], learning=gated, base=base)
    b, _ = live_agent(sessions, "b", [D3], learning=gated, base=base)
    forgot_before = learned_weights(sessions, a)
    assert any(".adapter." in name for name in forgot_before)
    with sessions.begin() as db:
        forget_source(db, agent_id=a, document_id=documents[D2], weights=True)
    run_forget_jobs(sessions, LearnerCache(sessions), agent_id=a, chunk_tokens=LEARN["chunk_tokens"])
    forgot, never = learned_weights(sessions, a), learned_weights(sessions, b)
    assert any(not torch.equal(forgot_before[name], never[name]) for name in never)  # D2 was learned
    assert forgot.keys() == never.keys() and all(torch.equal(forgot[name], never[name]) for name in never)


def test_the_gates_probe_decodes_as_compiled_serving_does_and_scores_the_same(tmp_path, monkeypatch):
    spec = tiny_chatml_spec()
    path = write_gguf(tmp_path / "tiny-chat.gguf", tiny_llama(vocab_size=len(spec.tokens)), spec, "llama")
    served = load_serving_base(str(path), "cpu").eval()  # int8 products, as the gate probes them
    steps, step = [], StaticDecoder.__call__
    monkeypatch.setattr(StaticDecoder, "__call__", lambda self, *args, **kwargs: steps.append(1) or step(
        self, *args, **kwargs))
    compiled = probe(served, compiled=True)
    assert len(steps) > 100  # every reply's tokens came through the compiled step
    assert compiled == probe(served)
