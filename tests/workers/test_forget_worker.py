"""A forget job run by real `lifelong worker` processes: killed mid-replay, it resumes to the same bits, and events
said meanwhile are learned after its publish, in order."""

from __future__ import annotations

import signal

import pytest
import torch
from sqlalchemy import select

from learner.learn import LearnerCache, learn_through
from learner.versions import latest_version
from memory.db import make_engine, make_session_factory
from memory.schema import Event, ForgetJob
from tests.learner.test_forget import D2, D3, chat_of, live_agent, memories_but_ids, say
from tests.learning import learned_weights
from tests.workers.conftest import _kill_group, wait_for
from workers.submit import enqueue_learning, forget_memories

LATER = b"said while the weights were being replayed"


@pytest.fixture
def sessions(deployment):
    engine = make_engine(deployment.settings.resolved_database_url)
    yield make_session_factory(engine)
    engine.dispose()


def _job(sessions, job_id: int) -> ForgetJob:
    with sessions() as db:
        return db.get(ForgetJob, job_id)


def test_a_worker_killed_mid_replay_resumes_it_to_the_same_bits(deployment, start_worker, sessions):
    # As the worker learns: its chunk size, one event per batch; every version kept (no pruning here).
    learn = {"chunk_tokens": deployment.settings.chunk_bytes, "keep_versions": 1000}
    a, documents = live_agent(sessions, "a", [D2, D3], learn)
    b, _ = live_agent(sessions, "b", [D3], learn)
    say(sessions, chat_of(sessions, b), LATER)
    learn_through(sessions, LearnerCache(sessions), agent_id=b, event_id=2**62, **learn)

    app = deployment.app()
    worker = start_worker(deployment, LIFELONG_TEST_FORGET_EVENT_DELAY_S="0.5", LIFELONG_FORGET_CHECKPOINT_S="0")
    job_id = forget_memories(app, sessions, agent_id=a, weights=True, document_id=documents[D2]).job_id
    wait_for(lambda: _job(sessions, job_id).events_done >= 2, "two events re-learned and checkpointed", worker)
    later = say(sessions, chat_of(sessions, a), LATER)
    enqueue_learning(app, agent_id=a, event_id=later)  # arrives mid-replay: learned after its publish
    _kill_group(worker, signal.SIGKILL)
    killed_at = _job(sessions, job_id)
    assert killed_at.status == "replaying" and killed_at.events_done < killed_at.events_total

    worker = start_worker(deployment)  # re-enqueues the job at start (and a redelivery may come too)
    wait_for(lambda: _job(sessions, job_id).status == "done", "the replay resumed and published", worker)
    wait_for(lambda: _learned(sessions, later), "the later event learned by the worker", worker)
    job = _job(sessions, job_id)
    assert (job.events_done, job.bytes_done) == (job.events_total, job.bytes_total)
    with sessions() as db:  # on top of the replay's result
        assert latest_version(db, a) > job.result_version
    weights_a, weights_b = learned_weights(sessions, a), learned_weights(sessions, b)
    assert all(torch.equal(weights_a[name], weights_b[name]) for name in weights_b)
    assert memories_but_ids(sessions, a) == memories_but_ids(sessions, b)


def _learned(sessions, event_id: int) -> bool:
    with sessions() as db:
        return db.scalar(select(Event.learned_at).where(Event.id == event_id)) is not None
