"""Fixtures for the learning tests: a migrated database on each backend, agents on the tiny preset."""

from __future__ import annotations

import torch
from sqlalchemy import func, select

from learner.base import load_base
from learner.learn import LearnerCache
from memory.eventlog import create_session, receive_document
from memory.schema import Agent, Memory, WeightVersion
from tests.dbs import db_url, empty_db_url, sessions  # noqa: F401 - re-exported fixtures

TINY = "preset:tiny"
# A rate large enough that one step visibly moves the weights.
FAST_LEARNING = {"learning_rate": 0.05}


def new_agent(sessions, name: str, learning: dict | None = None, base: str = TINY) -> tuple[int, int]:
    """(agent id, chat session id) of a fresh agent (default: tiny)."""
    with sessions.begin() as db:
        agent = Agent(name=name, base_checkpoint=base, learning_settings=learning or FAST_LEARNING)
        db.add(agent)
        db.flush()
        return agent.id, create_session(db, agent_id=agent.id).id


def received_document(sessions, agent_id: int, data: bytes, chunk_bytes: int, name: str = "") -> tuple[int, list[int]]:
    """(document id, chunk event ids) of a document received whole, as an upload commits it."""
    with sessions.begin() as db:
        return receive_document(db, agent_id=agent_id, data=data, chunk_bytes=chunk_bytes, name=name)


def learned_weights(sessions, agent_id: int) -> dict[str, torch.Tensor]:
    """The agent's current learned parameters, as a fresh learner would load them."""
    with sessions() as db:
        agent = db.get(Agent, agent_id)
    learner = LearnerCache(sessions).get(agent, version=_latest(sessions, agent_id))
    return learner.learned_weights()


def _latest(sessions, agent_id: int) -> int:
    with sessions() as db:
        return db.scalar(select(func.max(WeightVersion.version)).where(WeightVersion.agent_id == agent_id)) or 0


def memory_rows(sessions, agent_id: int) -> list[tuple[int | None, int, int, bytes]]:
    """(event id, byte start, byte end, keys) of the agent's memory rows, in id order."""
    with sessions() as db:
        return [tuple(row) for row in db.execute(
            select(Memory.event_id, Memory.byte_start, Memory.byte_end, Memory.keys)
            .where(Memory.agent_id == agent_id).order_by(Memory.id))]


def base_weights(names) -> dict[str, torch.Tensor]:
    params = dict(load_base(TINY).named_parameters())
    return {name: params[name].detach() for name in names}
