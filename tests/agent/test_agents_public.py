"""An agent page's figures come from a fixed number of grouped queries, and equal each agent's own."""

from __future__ import annotations

import torch
from sqlalchemy import event, select

from agent.routes.agents import agent_public, agents_public
from learner.versions import latest_version, publish_version
from memory.eventlog import append_events
from memory.schema import Agent
from tests.learning import db_url, empty_db_url, new_agent, sessions  # noqa: F401


def _statements(sessions, work):
    """What `work(db)` returns, and how many SQL statements it ran."""
    engine, count = sessions.kw["bind"], [0]

    def counted(*_) -> None:
        count[0] += 1

    event.listen(engine, "before_cursor_execute", counted)
    try:
        with sessions() as db:
            return work(db), count[0]
    finally:
        event.remove(engine, "before_cursor_execute", counted)


def test_a_page_of_agents_costs_the_same_queries_as_one_and_matches_each(sessions):
    for number in range(5):
        agent_id, session_id = new_agent(sessions, f"agent-{number}")
        with sessions.begin() as db:
            events = append_events(db, session_id=session_id, events=[("user", b"x" * (number + 1))] * (number + 1))
            for version in range(number):
                publish_version(db, agent_id=agent_id, weights={"w": torch.zeros(1)}, parent_version=version,
                                events_learned_through=events[0].id)

    def page(db):
        return agents_public(db, list(db.scalars(select(Agent).order_by(Agent.id))))

    whole, statements_for_five = _statements(sessions, page)
    _, statements_for_one = _statements(sessions, lambda db: agents_public(db, [db.scalars(select(Agent)).first()]))
    assert statements_for_five == statements_for_one
    with sessions() as db:
        for public in whole:
            assert public == agent_public(db, db.get(Agent, public.id))
            assert public.weight_version == latest_version(db, public.id)
    assert [public.queue_lag for public in whole] == [1, 2, 3, 4, 5]
    assert [public.weight_version for public in whole] == [0, 1, 2, 3, 4]
