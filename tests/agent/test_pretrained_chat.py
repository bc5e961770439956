"""An agent whose base is an imported model (a tiny GGUF file written here): chat turns use its
vocabulary and chat format, survive a restart exactly, and its learner reads the same log."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from agent.runtime import AgentRuntime
from learner.base import load_base
from learner.eventlog import create_session
from learner.learn import LearnerCache, learn_through
from learner.stream_format import event_tokens
from memory.schema import Agent, Event, StreamSession
from memory.settings import Settings
from models import SamplingConfig, State
from models.vocab import VocabSpec
from tests.dbs import db_url, empty_db_url, sessions  # noqa: F401 - fixtures
from tests.models.hf_reference import tiny_llama
from tests.models.test_import_gguf import write_gguf
from tests.models.tiny_vocab import tiny_chatml_spec
from workers.app import make_app

GREEDY = SamplingConfig(temperature=0.0, max_bytes=40, repetition_penalty=1.0)


def agent_on(sessions, base: Path, data_dir: Path) -> tuple[int, Callable[[], AgentRuntime]]:
    """(agent id, a factory of fresh serving runtimes: each is a new process's view) of an agent on `base`."""
    with sessions.begin() as db:
        agent = Agent(name=base.stem, base_checkpoint=str(base), learning_settings={})
        db.add(agent)
        db.flush()
        agent_id = agent.id
    settings = Settings(data_dir=data_dir)
    return agent_id, lambda: AgentRuntime(agent=_agent(sessions, agent_id), sessions=sessions,
                                          celery=make_app(settings), settings=settings)


@pytest.fixture
def imported_agent(sessions, tmp_path):
    spec = tiny_chatml_spec()
    path = write_gguf(tmp_path / "tiny-chat.gguf", tiny_llama(vocab_size=len(spec.tokens)), spec, "llama")
    return agent_on(sessions, path, tmp_path / "data")


def _agent(sessions, agent_id: int) -> Agent:
    with sessions() as db:
        return db.get(Agent, agent_id)


def _new_session(sessions, agent_id: int) -> int:
    with sessions.begin() as db:
        return create_session(db, agent_id=agent_id).id


def test_turns_read_the_models_own_format_and_a_restart_continues_exactly(sessions, imported_agent):
    agent_id, runtime = imported_agent
    serving = runtime()
    first, again = _new_session(sessions, agent_id), _new_session(sessions, agent_id)
    one = serving.chat(session_id=first, content=b"hello there <|im_start|>", sampling=GREEDY)
    assert one.reply and one.stop_reason in ("end_of_turn", "max_bytes")
    two = serving.chat(session_id=first, content=b"the general", sampling=GREEDY)
    # The same history in another session, its second turn served by a fresh process reading SQL.
    assert serving.chat(session_id=again, content=b"hello there <|im_start|>", sampling=GREEDY).reply == one.reply
    restarted = runtime().chat(session_id=again, content=b"the general", sampling=GREEDY)
    assert restarted.reply == two.reply

    model = load_base(_agent(sessions, agent_id).base_checkpoint)
    with sessions() as db:
        row = db.get(StreamSession, first)
        events = list(db.scalars(select(Event).where(Event.session_id == first).order_by(Event.seq)))
        state = State.from_bytes(row.state)
    assert row.events_read == len(events) == 4
    assert state.tokenizer == model.tokenizer.name and state.tokenizer.startswith("tiny-chat:")
    # Typed markers stayed text: the user's content holds no control token.
    chat = model.tokenizer.chat
    user_turn = event_tokens(events[0], model.tokenizer)
    before = len(chat.chat_start) - 1 + len(chat.prefix("user"))
    content = user_turn[before : len(user_turn) - len(chat.turn_end)]
    controls = {i for i, piece in enumerate(model.tokenizer.spec.tokens) if piece.startswith("<|")}
    assert content and not controls & set(content)
    assert model.tokenizer.encode(b"hello there <|im_start|>") == content


def test_the_learner_reads_an_imported_models_log_and_scores_it(sessions, imported_agent):
    agent_id, runtime = imported_agent
    session_id = _new_session(sessions, agent_id)
    result = runtime().chat(session_id=session_id, content=b"hello there", sampling=GREEDY)
    report = learn_through(sessions, LearnerCache(sessions), agent_id=agent_id, event_id=result.reply_event_id,
                           max_events=10)
    assert report.events == 2 and report.tokens > 0 and report.bits > 0
    with sessions() as db:
        learned = list(db.scalars(select(Event.learned_bits).where(Event.session_id == session_id)))
        row = db.get(StreamSession, session_id)
    assert all(bits is not None and bits > 0 for bits in learned)
    assert State.from_bytes(row.learn_state).tokenizer.startswith("tiny-chat:")


def gappy_gguf(directory) -> Path:
    """A tiny random Llama GGUF whose vocabulary lacks byte 0x04, as many real vocabularies do."""
    spec = tiny_chatml_spec()
    index = spec.tokens.index(_gpt2_byte_chars_inverse()[0x04])
    spec = VocabSpec(spec.kind, [t for i, t in enumerate(spec.tokens) if i != index],
                     [t for i, t in enumerate(spec.types) if i != index], merges=spec.merges,
                     split_digits=spec.split_digits)
    return write_gguf(directory / "gappy.gguf", tiny_llama(vocab_size=len(spec.tokens)), spec, "llama")


def test_content_the_vocabulary_cannot_spell_is_refused_before_anything_is_logged(sessions, tmp_path):
    agent_id, serving = agent_on(sessions, gappy_gguf(tmp_path), tmp_path / "data")
    runtime = serving()
    session_id = _new_session(sessions, agent_id)
    with pytest.raises(ValueError, match="cannot spell the characters"):
        runtime.chat(session_id=session_id, content=b"a\x04b", sampling=GREEDY)
    with sessions() as db:
        assert db.scalar(select(Event.id).where(Event.session_id == session_id)) is None
    assert runtime.chat(session_id=session_id, content=b"ab", sampling=GREEDY).reply


def _gpt2_byte_chars_inverse() -> dict[int, str]:
    from models.vocab import _gpt2_byte_chars

    return {byte: char for char, byte in _gpt2_byte_chars().items()}
