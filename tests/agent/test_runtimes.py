"""What a serving process keeps loaded (agent.runtime.Runtimes): past LIFELONG_MEMORY_RAM_BYTES, the agents asked for
least recently are unloaded, and load again, whole, when next asked for."""

from __future__ import annotations

import numpy as np

from agent.runtime import Runtimes
from learner.base import base_config
from memory.eventlog import create_session
from memory.schema import Agent
from memory.store import Span
from models import SamplingConfig
from settings import Settings
from tests.learning import TINY, db_url, empty_db_url, new_agent, sessions  # noqa: F401 - fixtures
from workers.app import make_app

GREEDY = SamplingConfig(temperature=0.0, max_bytes=24)


def _remembering(sessions, name: str, seed: int) -> tuple[int, int]:
    """An agent on the tiny base with 256 stored pairs, and its chat session."""
    agent_id, session_id = new_agent(sessions, name)
    config = base_config(TINY)
    generator = np.random.default_rng(seed)
    spans = [Span(keys=generator.standard_normal((64, config.head_dim)).astype(np.float32),
                  values=generator.standard_normal((64, config.head_dim)).astype(np.float32),
                  text=f"memory {i} of {name}".encode(), byte_start=64 * i, byte_end=64 * (i + 1))
             for i in range(4)]
    runtimes = Runtimes(settings=Settings(), sessions=sessions, celery=make_app(Settings()))
    with sessions() as db:
        runtimes.get(db.get(Agent, agent_id)).store.add_spans(spans)
    return agent_id, session_id


def test_past_its_budget_a_process_unloads_the_agents_asked_for_least_recently(sessions, tmp_path):
    agents = [_remembering(sessions, name, seed) for seed, name in enumerate(("ada", "bo", "cy"))]
    (ada, ada_session), (bo, _), (cy, _) = agents
    with sessions() as db:
        rows = {agent_id: db.get(Agent, agent_id) for agent_id, _ in agents}
        twin_session = create_session(db, agent_id=ada).id  # the same turns, in a process that never unloads
        db.commit()
    unbounded = Runtimes(settings=Settings(data_dir=tmp_path), sessions=sessions, celery=make_app(Settings()))
    one = unbounded.get(rows[ada])
    assert len(one.store) == 256 and one.nbytes >= 256 * 2 * base_config(TINY).head_dim * 2
    settings = Settings(data_dir=tmp_path, memory_ram_bytes=int(2.5 * one.nbytes))
    runtimes = Runtimes(settings=settings, sessions=sessions, celery=make_app(settings))
    first_turns = {agent_id: runtimes.get(rows[agent_id]).chat(session_id=session_id, content=b"who was it?",
                                                               sampling=GREEDY).reply
                   for agent_id, session_id in agents}
    assert [runtime.agent_id for runtime in runtimes.loaded()] == [bo, cy]  # ada, asked for first, unloaded
    reloaded = runtimes.get(rows[ada])  # loaded again, whole: its memory and its session
    assert [runtime.agent_id for runtime in runtimes.loaded()] == [cy, ada] and len(reloaded.store) == 256
    second_turn = reloaded.chat(session_id=ada_session, content=b"and then?", sampling=GREEDY).reply
    twin = [one.chat(session_id=twin_session, content=content, sampling=GREEDY).reply
            for content in (b"who was it?", b"and then?")]
    assert [first_turns[ada], second_turn] == twin and all(twin)
    for agent_id, _ in agents:  # unbounded, nothing is unloaded
        unbounded.get(rows[agent_id])
    assert len(unbounded.loaded()) == 3
