"""Weight versions: a serving model follows the newest one without a restart; rollback is exact."""

from __future__ import annotations

import pytest
import torch

from agent.serving import ServingModel
from learner.base import load_base
from learner.learn import LearnerCache, learn_through
from learner.versions import VersionNotFound, list_versions, prune_versions, rollback, tag_version
from memory.eventlog import append_events
from memory.schema import Agent
from tests.learning import TINY, db_url, empty_db_url, new_agent, sessions  # noqa: F401


def _learn(sessions, agent_id: int, session_id: int, text: bytes) -> int:
    with sessions.begin() as db:
        event_id = append_events(db, session_id=session_id, events=[("user", text)])[0].id
    return learn_through(
        sessions, LearnerCache(sessions), agent_id=agent_id, event_id=event_id, chunk_tokens=16
    ).version


def _agent(sessions, agent_id: int) -> Agent:
    with sessions() as db:
        return db.get(Agent, agent_id)


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


def test_serving_model_picks_up_a_new_version_without_restart(sessions):
    agent_id, session_id = new_agent(sessions, "a")
    serving = ServingModel(sessions=sessions, agent_id=agent_id, base=load_base(TINY))
    before, in_flight = _snapshot(serving.current().model), serving.current()
    assert serving.version == 0 and not serving.refresh()

    version = _learn(sessions, agent_id, session_id, b"something worth learning")
    assert serving.refresh() and serving.version == version == 1
    after = _snapshot(serving.current().model)
    assert not _same(before, after)
    assert _same(after, {**before, **LearnerCache(sessions).get(_agent(sessions, agent_id), 1).learned_weights()})
    # A request that started on the old weights keeps them to its end.
    assert in_flight.version == 0 and _same(_snapshot(in_flight.model), before)
    assert not serving.refresh()


def test_rollback_restores_the_old_weights_bit_for_bit(sessions):
    agent_id, session_id = new_agent(sessions, "a")
    serving = ServingModel(sessions=sessions, agent_id=agent_id, base=load_base(TINY))
    base = _snapshot(serving.current().model)
    _learn(sessions, agent_id, session_id, b"first lesson")
    serving.refresh()
    at_one = _snapshot(serving.current().model)
    _learn(sessions, agent_id, session_id, b"second lesson, which moves the weights again")
    serving.refresh()
    assert serving.version == 2 and not _same(_snapshot(serving.current().model), at_one)

    with sessions.begin() as db:
        assert rollback(db, agent_id=agent_id, to_version=1) == 3
    assert serving.refresh() and serving.version == 3
    assert _same(_snapshot(serving.current().model), at_one)
    with sessions.begin() as db:
        rollback(db, agent_id=agent_id, to_version=0)
    serving.refresh()
    assert _same(_snapshot(serving.current().model), base)

    # Learning continues from the rolled-back weights, not from the ones rolled away from.
    assert _learn(sessions, agent_id, session_id, b"third lesson") == 5
    with sessions() as db:
        assert [(v.version, v.parent_version) for v in list_versions(db, agent_id)][:3] == [(5, 4), (4, 0), (3, 1)]
        with pytest.raises(VersionNotFound):
            rollback(db, agent_id=agent_id, to_version=42)


def test_pruning_keeps_the_newest_and_the_tagged(sessions):
    agent_id, session_id = new_agent(sessions, "a")
    for i in range(4):
        _learn(sessions, agent_id, session_id, f"lesson {i}".encode())
    with sessions.begin() as db:
        tag_version(db, agent_id=agent_id, version=1, tag="known good")
        assert prune_versions(db, agent_id=agent_id, keep=2) == 1
    with sessions() as db:
        assert [v.version for v in list_versions(db, agent_id)] == [4, 3, 1]
        with pytest.raises(VersionNotFound):
            rollback(db, agent_id=agent_id, to_version=2)
