"""An agent whose base is an imported model (a tiny GGUF file written here): chat turns use its
vocabulary and chat format, survive a restart exactly, and its learner reads the same log."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from sqlalchemy import select

from agent.recall_note import recalled_note, with_note
from agent.runtime import AgentRuntime, Runtimes
from learner.base import load_base
from learner.learn import LearnerCache, learn_through
from memory.admin import delete_memories
from memory.eventlog import create_session
from memory.pair_format import format_for
from memory.recall import recall
from memory.schema import Agent, Event, Memory, StreamSession
from memory.store import MemoryStore, memory_for
from memory.stream_format import event_tokens, turn_prompt
from models import SamplingConfig, State
from models.tokenizer import decode
from models.transformer import TransformerLM
from models.vocab import VocabSpec
from settings import Settings
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
    user_turn = event_tokens(events[0], model.tokenizer, starts_stream=True)
    before = len(chat.chat_start) - 1 + len(chat.prefix("user"))
    content = user_turn[before : len(user_turn) - len(chat.turn_end)]
    controls = {i for i, piece in enumerate(model.tokenizer.spec.tokens) if piece.startswith("<|")}
    assert content and not controls & set(content)
    assert model.tokenizer.encode(b"hello there <|im_start|>") == content


def test_a_turn_does_not_open_as_an_earlier_reply_of_its_session_opened(sessions, imported_agent):
    """The runtime hands generation every earlier reply's first sentence (SamplingConfig.no_repeat_openings)."""
    from models.generate import OPENING_SHARED_TOKENS, first_sentence

    agent_id, runtime = imported_agent
    serving = runtime()
    session_id = _new_session(sessions, agent_id)
    seen: list[list[list[int]]] = []
    generate_turn = serving._generate
    serving._generate = lambda reading, *rest: (seen.append(reading.guards.openings), generate_turn(reading, *rest))[1]
    replies = [serving.chat(session_id=session_id, content=text, sampling=GREEDY).reply
               for text in (b"hello there", b"the general rode on", b"hello there")]
    encode = serving.encode
    expected = [encode(first_sentence(reply.decode(errors="replace")).encode()) for reply in replies]
    assert seen == [[], expected[:1], expected[1::-1]]  # newest first
    third = encode(replies[2])
    for opening in expected[:2]:  # it shares at most the first few tokens of one, and never all of a short one
        shared = next((i for i, (a, b) in enumerate(zip(third, opening)) if a != b), min(len(third), len(opening)))
        assert shared <= OPENING_SHARED_TOKENS if len(opening) > OPENING_SHARED_TOKENS else shared < len(opening)


@pytest.mark.parametrize("holds_replies", [False, True])
def test_a_sessions_context_holds_the_users_turns_and_its_replies_only_when_set(sessions, imported_agent, tmp_path,
                                                                               holds_replies):
    agent_id, _ = imported_agent
    settings = Settings(data_dir=tmp_path / "data", context_holds_replies=holds_replies)
    serving = AgentRuntime(agent=_agent(sessions, agent_id), sessions=sessions, celery=make_app(settings),
                           settings=settings)
    session_id = _new_session(sessions, agent_id)
    for message in (b"hello there", b"the general", b"rode to the sea"):
        serving.chat(session_id=session_id, content=message, sampling=GREEDY)
    model = load_base(_agent(sessions, agent_id).base_checkpoint)
    with sessions() as db:
        row = db.get(StreamSession, session_id)
        events = list(db.scalars(select(Event).where(Event.session_id == session_id).order_by(Event.seq)))
    assert [event.role for event in events] == ["user", "assistant"] * 3 and row.events_read == 6
    prefix = len(model.tokenizer.chat.prefix("assistant"))
    without = len(turn_prompt(events, model.tokenizer, stream_starts=True, replies=False)) - prefix
    read = State.from_bytes(row.state).position
    if holds_replies:  # each reply's turn as well: its prefix, the reply as sampled (at least a token), its end
        assert read >= without + 3 * (prefix + 1 + len(model.tokenizer.chat.turn_end))
    else:  # the messages alone: a small model copies whatever its earlier replies said
        assert read == without
    # A new process reading the saved state answers as this one would.
    again = _new_session(sessions, agent_id)
    for message in (b"hello there", b"the general"):
        serving.chat(session_id=again, content=message, sampling=GREEDY)
    fresh = AgentRuntime(agent=_agent(sessions, agent_id), sessions=sessions, celery=make_app(settings),
                         settings=settings)
    assert fresh.chat(session_id=again, content=b"rode to the sea", sampling=GREEDY).reply == events[-1].content


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


@pytest.mark.parametrize("attends", [False, True])
def test_an_imported_agent_stores_its_memory_layers_pairs_and_recalls_them_until_deleted(sessions, imported_agent,
                                                                                        attends):
    """Memory layers that attend keep every memory layer's fp16 pairs; by default, the lowest two memory layers'
    int8 keys (memory.pair_format)."""
    agent_id, runtime = imported_agent
    serving = runtime()
    told, asked = _new_session(sessions, agent_id), _new_session(sessions, agent_id)
    result = serving.chat(session_id=told, content=b"the general rode to the sea", sampling=GREEDY)
    learn_through(sessions, LearnerCache(sessions, memory_attention=attends), agent_id=agent_id,
                  event_id=result.reply_event_id, max_events=10)
    model = load_base(_agent(sessions, agent_id).base_checkpoint)
    config = model.config
    assert config.memory_layers and config.memory_channels == len(config.memory_layers) * config.num_kv_heads
    pair_format = format_for(config, attends=attends)
    assert pair_format.keys_only != attends
    with sessions() as db:
        rows = list(db.scalars(select(Memory).where(Memory.agent_id == agent_id).order_by(Memory.id)))
    assert rows and all(row.session_id == told and row.pair_format == pair_format.name for row in rows)
    # One row per chunk, at the stream's positions: each token's pairs of every memory layer, fp16, or the
    # lowest two memory layers' int8 keys (with a scale each) and no values.
    assert [row.token_start for row in rows] == list(np.cumsum([0] + [row.num_tokens for row in rows[:-1]]))
    for row in rows:
        if attends:
            assert len(row.keys) == len(row.values) == row.num_tokens * config.memory_channels * config.head_dim * 2
        else:
            kept = min(2, len(config.memory_layers)) * config.num_kv_heads
            assert (len(row.keys), len(row.values)) == (row.num_tokens * kept * (config.head_dim + 2), 0)

    store = MemoryStore.open(agent_id=agent_id, sessions=sessions, head_dim=config.head_dim,
                             channels=config.memory_channels, pair_format=pair_format)
    with sessions() as db:
        hits = runtime().recall(db, query="the general rode", limit=5)
        told_state = State.from_bytes(db.get(StreamSession, told).state)
    assert hits and {hit.memory_id for hit in hits} <= {row.id for row in rows}
    question = torch.tensor([model.tokenizer.encode(b" where did the general ride")])
    with torch.no_grad():
        bare = model(question).log_probs
        elsewhere = model(question, None, memory_for(model, store, asked)).log_probs
        # The session that said it holds all of it in its window: its own pairs are never weighed twice.
        own_bare = model(question, told_state).log_probs
        own = model(question, told_state, memory_for(model, store, told)).log_probs
        torch.testing.assert_close(own, own_bare, rtol=0, atol=1e-5)
        assert (elsewhere - bare).abs().max() > 1e-3  # another session weighs what was said
        with sessions.begin() as db:
            delete_memories(db, agent_id=agent_id, session_id=told)
        store.catch_up()
        after = model(question, None, memory_for(model, store, asked)).log_probs
    torch.testing.assert_close(after, bare, rtol=0, atol=1e-5)  # deleted: nothing left to weigh


def test_a_recalled_note_is_read_before_the_answer_but_never_logged(sessions, imported_agent):
    agent_id, runtime = imported_agent
    serving = runtime()
    told = _new_session(sessions, agent_id)
    result = serving.chat(session_id=told, content=b"the general rode to the sea", sampling=GREEDY)
    learn_through(sessions, LearnerCache(sessions), agent_id=agent_id, event_id=result.reply_event_id, max_events=10)
    model = serving.serving.current().model
    asked = _new_session(sessions, agent_id)
    with sessions() as db:
        serving.store.catch_up()
        note = recalled_note(db, store=serving.store, model=model, session_id=asked, state=None,
                             message=b"where did the general ride", min_score=0.0, max_bytes=1024)
        told_state = State.from_bytes(db.get(StreamSession, told).state)
        # The session that said it still holds it in its window: nothing to remind it of.
        assert recalled_note(db, store=serving.store, model=model, session_id=told, state=told_state,
                             message=b"where did the general ride", min_score=0.0, max_bytes=1024) == []
    assert b"the general rode to the sea" in decode(model.tokenizer, note)
    with sessions() as db:  # what the agent replied is recalled, but never read back to it as a memory
        replied = set(db.scalars(select(Memory.id).where(Memory.event_id == result.reply_event_id)))
        recalled = {hit.memory_id for hit in serving.recall(db, query="where did the general ride", limit=8)}
    assert replied & recalled
    for memory_id in replied:
        with sessions() as db:
            text = db.get(Memory, memory_id).text.strip()
        assert text.encode() not in decode(model.tokenizer, note)
    # Nor what it was asked before: a question tells nothing, and noted beside the answer it was answered instead.
    earlier = _new_session(sessions, agent_id)
    asked_before = serving.chat(session_id=earlier, content=b"did the general ride to the sea?", sampling=GREEDY)
    learn_through(sessions, LearnerCache(sessions), agent_id=agent_id, event_id=asked_before.reply_event_id,
                  max_events=10)
    with sessions() as db:
        serving.store.catch_up()
        question_rows = set(db.scalars(select(Memory.id).where(Memory.event_id == asked_before.user_event_id)))
        assert question_rows & {hit.memory_id for hit in serving.recall(db, query="where did the general ride",
                                                                        limit=8)}
        # Searched for a note, both the model's search and the words' leave them out, so what was told is found.
        told_hits = {hit.memory_id for hit in recall(db, store=serving.store, model=model, limit=8, told_only=True,
                                                     text="where did the general ride")}
        assert told_hits and not told_hits & (question_rows | replied)
        note = recalled_note(db, store=serving.store, model=model, session_id=asked, state=None,
                             message=b"where did the general ride", min_score=0.0, max_bytes=1024)
    assert b"did the general ride to the sea?" not in decode(model.tokenizer, note)
    assert b"the general rode to the sea" in decode(model.tokenizer, note)
    with sessions() as db:  # a memory that only repeats the message is no reminder of anything
        serving.store.catch_up()
        repeated = recalled_note(db, store=serving.store, model=model, session_id=asked, state=None,
                                 message=b"The general rode to the sea ", min_score=0.0, max_bytes=1024)
    assert b"general" not in decode(model.tokenizer, repeated)
    # The note opens the message: after the stream's start (its system prompt) and the user's prefix.
    first = Event(role="user", content=b"hi", seq=0, document_id=None)
    prompt = turn_prompt([first], model.tokenizer, stream_starts=True)
    start = [*model.tokenizer.chat.chat_start, *model.tokenizer.chat.prefix("user")]
    noted = with_note(prompt, [7, 7], len(model.tokenizer.encode(first.content)), model.tokenizer)
    assert noted == [*start, 7, 7, *prompt[len(start) :]]

    serving.recall_min_score = 0.0  # every recalled memory is noted
    serving.chat(session_id=asked, content=b"where did the general ride", sampling=GREEDY)
    with sessions() as db:
        row = db.get(StreamSession, asked)
        events = list(db.scalars(select(Event).where(Event.session_id == asked).order_by(Event.seq)))
    logged = turn_prompt(events, model.tokenizer, stream_starts=True,
                         replies=False)[: -len(model.tokenizer.chat.prefix("assistant"))]
    # The note was read, not kept: the state read what the log holds (its user turns: the context holds no
    # replies by default), not the log plus the note.
    assert State.from_bytes(row.state).position == len(logged)


def test_a_turn_that_fails_before_its_reply_leaves_its_message_failed_never_learned(sessions, imported_agent,
                                                                                     monkeypatch):
    agent_id, runtime_of = imported_agent
    runtime = runtime_of()
    session_id = _new_session(sessions, agent_id)
    enqueued = []
    monkeypatch.setattr(runtime, "_enqueue_learning", enqueued.append)

    def broken(*args, **kwargs):
        raise RuntimeError("the model fell over")

    monkeypatch.setattr(runtime, "_generate", broken)
    with pytest.raises(RuntimeError, match="fell over"):
        runtime.chat(session_id=session_id, content=b"hello there", sampling=GREEDY)
    with sessions() as db:
        (event,) = db.scalars(select(Event).where(Event.session_id == session_id)).all()
    assert event.failed_reason == "the reply failed: RuntimeError: the model fell over" and enqueued == []
    learn_through(sessions, LearnerCache(sessions), agent_id=agent_id, event_id=event.id)
    with sessions() as db:
        assert db.get(Event, event.id).learned_at is None  # the learner leaves a failed message alone


@pytest.mark.parametrize("holds_replies", [False, True])
def test_a_compiled_decoder_serves_the_replies_and_states_the_models_forward_does(sessions, tmp_path, holds_replies):
    spec = tiny_chatml_spec()
    path = write_gguf(tmp_path / "tiny-chat.gguf", tiny_llama(vocab_size=len(spec.tokens)), spec, "llama")
    with sessions.begin() as db:
        agent = Agent(name="compiled", base_checkpoint=str(path), learning_settings={})
        db.add(agent)
        db.flush()
        agent_id = agent.id
    served = {}
    for compiled in (False, True):
        settings = Settings(data_dir=tmp_path / "data", compiled_decode=compiled, context_holds_replies=holds_replies)
        runtime = AgentRuntime(agent=_agent(sessions, agent_id), sessions=sessions, celery=make_app(settings),
                               settings=settings)
        if compiled:
            assert runtime.serving.wait_for_decoder(timeout=300)
        assert (runtime.serving.current().decoder is not None) is compiled
        session_id = _new_session(sessions, agent_id)
        replies = [runtime.chat(session_id=session_id, content=content, sampling=GREEDY).reply
                   for content in (b"hello there", b"the general", b"and then?")]
        with sessions() as db:
            row = db.get(StreamSession, session_id)
            served[compiled] = replies, row.position, State.from_bytes(row.state)
    (replies, position, state), (compiled_replies, compiled_position, compiled_state) = served[False], served[True]
    assert compiled_replies == replies and all(replies) and compiled_position == position
    # Equal to the bit here: the steps round into the same bf16 window (an attention scaled by 1.5 moved it 4e-3).
    for ours, theirs in zip(compiled_state.layers, state.layers, strict=True):
        assert torch.equal(ours.keys, theirs.keys) and torch.equal(ours.values, theirs.values)


def test_a_turn_without_a_note_reads_its_message_once_and_saves_the_state_a_second_read_gives(sessions,
                                                                                             imported_agent,
                                                                                             monkeypatch):
    agent_id, runtime = imported_agent
    serving = runtime()
    session_id = _new_session(sessions, agent_id)
    serving.chat(session_id=session_id, content=b"hello there", sampling=GREEDY)
    with sessions() as db:
        before = State.from_bytes(db.get(StreamSession, session_id).state)
    read, forward = [], TransformerLM.forward
    monkeypatch.setattr(TransformerLM, "forward", lambda self, tokens, *args, **kwargs: read.append(
        tokens.shape[1]) or forward(self, tokens, *args, **kwargs))
    message = b"the general rode to the sea, " * 40  # past one prompt chunk
    turn = serving.chat(session_id=session_id, content=message, sampling=GREEDY)
    monkeypatch.undo()
    # The prompt once, then a step per sampled token: before, the message was read a second time after the reply.
    assert turn.prompt_tokens > 300 and sum(read) <= turn.prompt_tokens + turn.reply_tokens
    # The saved state is the one a second read of the message (without the assistant's prefix) gives.
    model = serving.serving.current().model
    with sessions() as db:
        row = db.get(StreamSession, session_id)
        unread = list(db.scalars(select(Event).where(Event.session_id == session_id, Event.seq.in_((1, 2)))))
    again = before
    tokens = turn_prompt(unread, model.tokenizer, stream_starts=False, replies=False)
    tokens = tokens[: -len(model.tokenizer.chat.prefix("assistant"))]
    with torch.inference_mode():
        for start in range(0, len(tokens), 512):
            again = model(torch.tensor([tokens[start : start + 512]]), again, last_only=True).state
    saved = State.from_bytes(row.state)
    assert saved.position == again.position
    for ours, theirs in zip(saved.layers, again.layers, strict=True):
        assert torch.equal(ours.keys, theirs.keys) and torch.equal(ours.values, theirs.values)


def test_agents_of_one_base_share_its_serving_copy_and_each_replies_as_on_its_own(sessions, tmp_path):
    spec = tiny_chatml_spec()
    path = write_gguf(tmp_path / "tiny-chat.gguf", tiny_llama(vocab_size=len(spec.tokens)), spec, "llama")
    ids = []
    with sessions.begin() as db:
        for name in ("one", "two"):
            agent = Agent(name=name, base_checkpoint=str(path), learning_settings={})
            db.add(agent)
            db.flush()
            ids.append(agent.id)
    settings = Settings(data_dir=tmp_path / "data")
    runtimes = Runtimes(settings=settings, sessions=sessions, celery=make_app(settings))
    one, two = (runtimes.get(_agent(sessions, agent_id)) for agent_id in ids)
    first, second = one.serving.current().model, two.serving.current().model
    assert first is second  # at version 0 both serve the shared copy itself
    alone = AgentRuntime(agent=_agent(sessions, ids[1]), sessions=sessions, celery=make_app(settings),
                         settings=settings)
    assert alone.serving.current().model.embedding.data_ptr() != first.embedding.data_ptr()
    replies = []
    for runtime in (one, two, alone):
        session_id = _new_session(sessions, runtime.agent_id)
        replies.append([runtime.chat(session_id=session_id, content=content, sampling=GREEDY).reply
                        for content in (b"hello there", b"the general")])
    assert replies[0] == replies[1] == replies[2] and all(replies[0])
