"""Hit counts: the memories that supplied what the agent read, counted once, when it is learned."""

from __future__ import annotations

import json.decoder
from pathlib import Path

from sqlalchemy import select

from learner.learn import LearnerCache, learn_through
from memory.schema import Agent, Memory
from settings import SHIPPED_CHECKPOINT
from tests.learning import db_url, empty_db_url, received_document, sessions  # noqa: F401


def _hits(sessions, agent_id: int) -> dict[int | None, int]:
    """Summed hit counts per event whose reading wrote the rows."""
    per_event: dict[int | None, int] = {}
    with sessions() as db:
        for event_id, count in db.execute(select(Memory.event_id, Memory.hit_count).where(Memory.agent_id == agent_id)):
            per_event[event_id] = per_event.get(event_id, 0) + count
    return per_event


def test_a_passage_read_again_counts_hits_on_the_first_reading_once(sessions):
    # The shipped model recalls a repeat; a random tiny one would not, and nothing would be counted.
    passage = Path(json.decoder.__file__).read_bytes()[:1500]
    with sessions.begin() as db:
        agent = Agent(name="reader", base_checkpoint=str(SHIPPED_CHECKPOINT), learning_settings={})
        db.add(agent)
        db.flush()
        agent_id = agent.id
    _, (first, second) = received_document(sessions, agent_id, passage * 2, chunk_bytes=len(passage))

    learn_through(sessions, LearnerCache(sessions), agent_id=agent_id, event_id=first)
    assert _hits(sessions, agent_id) == {first: 0}  # nothing was stored before the first reading

    learn_through(sessions, LearnerCache(sessions), agent_id=agent_id, event_id=second)
    hits = _hits(sessions, agent_id)
    # Reading the passage again, the memory supplies most bytes (the window holds only 512 of them).
    assert hits[second] == 0 and len(passage) // 2 < hits[first] <= len(passage)
    with sessions() as db:
        stamped = db.scalars(select(Memory.last_hit_at).where(Memory.event_id == first, Memory.hit_count > 0)).all()
    assert stamped and all(stamped)

    # A redelivered task learns nothing again, so it counts nothing again.
    learn_through(sessions, LearnerCache(sessions), agent_id=agent_id, event_id=second)
    assert _hits(sessions, agent_id) == hits
