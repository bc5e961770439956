"""The per-agent runtime of a serving process: one loaded model (following the agent's newest weight
version), its memory store, and the streaming state of its chat sessions.

A chat turn logs the user's message first, then reads it from the session's state (cached here; from
SQL on a miss), samples the reply with retrieval over the agent's memory, and commits the reply event
together with the new state, so a restarted server continues exactly where this one stopped. Learning
is only enqueued: a turn never waits for it.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import torch
from celery import Celery
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from agent.recall_note import recalled_note, with_note
from agent.reply_guards import reply_guards
from agent.serving import ServingModel, load_serving_base
from memory.db import AgentGone, chat_turn_lock, retry_transient
from memory.eventlog import append_events, append_reply, mark_event_failed, unread_events
from memory.pair_format import format_for
from memory.recall import RecallHit, recall
from memory.recent import RecentMemory
from memory.schema import Agent, Event, StreamSession
from memory.store import MemoryStore, StoreConfig, memory_for
from memory.stream_format import turn_prompt
from models import LanguageModel, SamplingConfig, State, generate
from models.generate import PROMPT_CHUNK_TOKENS, Decoder, Generation, ReplyGuards
from settings import Settings
from workers.submit import enqueue_learning

log = logging.getLogger(__name__)

# RAM for chat sessions' states per agent; the least recently used are read back from SQL when they
# return. A byte budget, not a count: a pretrained transformer's state (its layers' key/value windows)
# is megabytes where the byte model's is kilobytes.
CACHED_STATE_BYTES = 1 << 30


class StateMismatch(RuntimeError):
    """A stored session state that this agent's model cannot continue (not the caller's fault)."""


@dataclass(frozen=True)
class TurnResult:
    user_event_id: int
    reply_event_id: int
    reply: bytes
    stop_reason: str
    weight_version: int
    first_byte_ms: float
    elapsed_ms: float
    prompt_tokens: int = 0  # the model's tokens this turn read before replying (the message, its frame)
    reply_tokens: int = 0  # the model's tokens of the reply, its end of turn when it sampled one (not a cut)


@dataclass(frozen=True)
class _Reading:
    """What a turn's first phase read, for the other two."""

    model: LanguageModel
    version: int
    session_created_at: datetime  # with the id, tells a session from a later one that reused its id
    read_at: datetime  # a forget of an event after this dropped what the turn read
    state: State | None  # the session's state before the turn; None: its stream starts
    prompt: list[int]  # the unread events, the message last, then the assistant's prefix
    note: list[int]  # read at the start of the message, never logged (agent.recall_note)
    message_tokens: int
    reader: Any  # the memory the model reads (memory.store.memory_for, or memory.recent)
    on_read: Callable[[Any], None] | None
    guards: ReplyGuards  # what the reply must not say (agent.reply_guards)
    decoder: Decoder | None  # the model's compiled single-token steps, when compiled (agent.serving)


@dataclass
class _CachedState:
    created_at: datetime  # with the id, tells a session from a later one that reused its id
    state: State


class AgentRuntime:
    """One agent in one serving process; safe to use from many threads (one turn per session at a time)."""

    def __init__(self, *, agent: Agent, sessions: sessionmaker[Session], celery: Celery, settings: Settings,
                 base: LanguageModel | None = None):
        """`base`: the agent's base as serving holds it (`load_serving_base`), shared with other agents of the same
        base and never written; loaded here when not given."""
        self.agent_id, self.created_at = agent.id, agent.created_at
        self.sessions, self.celery = sessions, celery
        if base is None:
            base = load_serving_base(agent.base_checkpoint, settings.device, settings.serving_weights)
        self.serving = ServingModel(sessions=sessions, agent_id=agent.id, base=base,
                                    compiled_decode=settings.compiled_decode)
        snapshot = settings.snapshot_dir(agent.id)
        self.store = MemoryStore.open(agent_id=agent.id, sessions=sessions, head_dim=base.config.head_dim,
                                      channels=base.config.memory_channels,
                                      search_openings=base.config.memory_searches_openings,
                                      snapshot=snapshot if snapshot.exists() else None,
                                      config=StoreConfig.serving(settings.memory_nprobe),
                                      pair_format=format_for(base.config, attends=settings.memory_attention))
        self.memory_attention = settings.memory_attention
        self.context_holds_replies = settings.context_holds_replies
        self.recall_in_context, self.recall_min_score = settings.recall_in_context, settings.recall_min_score
        self.recall_max_bytes = settings.recall_max_bytes
        self._states: OrderedDict[int, _CachedState] = OrderedDict()
        self._states_lock = threading.Lock()
        self._session_locks: dict[int, threading.Lock] = {}

    def _lock_for(self, session_id: int) -> threading.Lock:
        with self._states_lock:
            return self._session_locks.setdefault(session_id, threading.Lock())

    def _load_state(self, db: Session, row: StreamSession) -> State | None:
        with self._states_lock:
            cached = self._states.get(row.id)
        if cached is not None and cached.created_at == row.created_at and cached.state.position == row.position:
            return cached.state
        blob = db.scalar(select(StreamSession.state).where(StreamSession.id == row.id))
        if blob is None:
            return None
        state, model = State.from_bytes(blob), self.serving.current().model
        try:
            state.check_tokenizer(model.tokenizer.name)
        except ValueError as exc:
            raise StateMismatch(f"session {row.id}: {exc}; start a new session") from exc
        return state.to(model.device)

    @property
    def nbytes(self) -> int:
        """What this agent holds in RAM beyond the model its base shares: its memory and cached session states."""
        with self._states_lock:
            states = sum(cached.state.nbytes for cached in self._states.values())
        return self.store.nbytes + states

    def _remember(self, session_id: int, created_at: datetime, state: State) -> None:
        with self._states_lock:
            self._states[session_id] = _CachedState(created_at, state)
            self._states.move_to_end(session_id)
            total = sum(cached.state.nbytes for cached in self._states.values())
            while total > CACHED_STATE_BYTES and len(self._states) > 1:
                total -= self._states.popitem(last=False)[1].state.nbytes

    def encode(self, content: bytes) -> list[int]:
        """The message's tokens; ValueError, naming what, for content this agent's vocabulary cannot spell."""
        return self.serving.current().model.tokenizer.encode(content)

    def chat(self, *, session_id: int, content: bytes, sampling: SamplingConfig,
             on_piece: Callable[[str], None] = lambda piece: None, tokens: list[int] | None = None) -> TurnResult:
        """One turn: log `content`, stream the reply's pieces to `on_piece`, log the reply and the state.
        `tokens`: the content's, when the caller has encoded it (`encode`). ValueError, before anything is
        logged, for content the model's vocabulary cannot spell. A turn that fails before its reply is logged
        marks the message failed: it is never learned alone."""
        started = time.perf_counter()
        sampling = dataclasses.replace(sampling, min_bytes=1)  # an event holds at least one byte
        message = self.encode(content) if tokens is None else tokens
        with self._lock_for(session_id), chat_turn_lock(self.sessions, session_id):
            user_event_id = retry_transient(lambda: self._log_message(session_id, content))
            try:
                reading = self._read(session_id, user_event_id, message, sampling)
                generation, first_byte_ms = self._generate(reading, sampling, on_piece, started)
                reply_event_id = self._commit(session_id, reading, generation)
            except AgentGone:  # deleted during the turn: its log went with it
                raise
            except Exception as exc:
                with self.sessions.begin() as db:
                    mark_event_failed(db, agent_id=self.agent_id, event_id=user_event_id,
                                      reason=f"the reply failed: {type(exc).__name__}: {exc}")
                raise
            self._enqueue_learning(reply_event_id)
        turn_end = len(reading.model.tokenizer.chat.turn_end) if generation.stop_reason == "end_of_turn" else 0
        return TurnResult(user_event_id=user_event_id, reply_event_id=reply_event_id, reply=generation.reply,
                          stop_reason=generation.stop_reason, weight_version=reading.version,
                          first_byte_ms=first_byte_ms, elapsed_ms=(time.perf_counter() - started) * 1000,
                          prompt_tokens=len(reading.prompt), reply_tokens=len(generation.tokens) + turn_end)

    def _log_message(self, session_id: int, content: bytes) -> int:
        with self.sessions.begin() as db:
            return append_events(db, session_id=session_id, events=[("user", content)])[0].id

    def _read(self, session_id: int, user_event_id: int, message: list[int], sampling: SamplingConfig) -> _Reading:
        """A turn's first phase: the newest weights, the store caught up, the session's state and the events it
        has not read (the message last), the note recalled for the message, and the prompt."""
        self.serving.refresh()  # between requests: a newer weight version is picked up here
        model, version, decoder = self.serving.current()
        self.store.catch_up()  # once per turn: the recall and the reply's searches read RAM only
        read_at = datetime.now(UTC)
        with self.sessions() as db:
            row = db.get(StreamSession, session_id)
            if row is None:
                raise AgentGone(f"session {session_id} was deleted with its agent")
            state = self._load_state(db, row)
            unread = unread_events(db, session_id=session_id, events_read=row.events_read if state else 0)
            if not unread or unread[-1].id != user_event_id:
                raise StateMismatch(f"session {session_id}: the message was forgotten before it was answered; "
                                    "send it again to be answered")
            note = self._note(db, model, session_id, state, unread, message)
            guards = reply_guards(db, tokenizer=model.tokenizer, session_id=session_id, sampling=sampling,
                                  note=b"".join(map(model.tokenizer.token_bytes, note)).decode(errors="replace"))
        prompt = turn_prompt(unread, model.tokenizer, stream_starts=state is None, message=message,
                             replies=self.context_holds_replies)
        # The store as it is, and what this turn reads, searchable as soon as it is read.
        reader, on_read = memory_for(model, self.store, session_id, attend=self.memory_attention), None
        if model.retrieval_block is not None:
            reader = RecentMemory(self.store, model.config.head_dim)
            on_read = reader.remember
        return _Reading(model=model, version=version, session_created_at=row.created_at, read_at=read_at,
                        state=state, prompt=prompt, note=note, message_tokens=len(message), reader=reader,
                        on_read=on_read, guards=guards, decoder=decoder)

    def _generate(self, reading: _Reading, sampling: SamplingConfig, on_piece: Callable[[str], None],
                  started: float) -> tuple[Generation, float]:
        """A turn's second phase: the reply, its pieces streamed as they are sampled; and the first byte's ms."""
        model = reading.model
        prompt = with_note(reading.prompt, reading.note, reading.message_tokens, model.tokenizer)
        # Where the turn's saved state is read on the way (the message without the note or the assistant's prefix),
        # it is kept then rather than read a second time after the reply.
        mark = None if self.context_holds_replies or reading.note else len(self._without_prefix(reading))
        generation = generate(model, torch.tensor([prompt]), state=reading.state, memory=reading.reader,
                              sampling=sampling, on_read=reading.on_read, guards=reading.guards,
                              decoder=reading.decoder, mark=mark)
        first_byte_ms = None
        for piece in generation:
            if first_byte_ms is None:
                first_byte_ms = (time.perf_counter() - started) * 1000
            on_piece(piece)
        return generation, first_byte_ms if first_byte_ms is not None else 0.0

    def _commit(self, session_id: int, reading: _Reading, generation: Generation) -> int:
        """A turn's last phase: the state closed as the next turn will read on (the turn with its reply, or
        without it when the context holds no replies), saved with the reply's event in one transaction, and
        cached; returns the reply's event id."""
        model = reading.model
        with torch.inference_mode():
            if generation.marked_state is not None:  # read on the way to the reply
                state = generation.marked_state
            elif not self.context_holds_replies:  # the state reads the message, not the reply
                message, state = self._without_prefix(reading), reading.state
                for start in range(0, len(message), PROMPT_CHUNK_TOKENS):
                    chunk = torch.tensor([message[start : start + PROMPT_CHUNK_TOKENS]], device=model.device)
                    state = model(chunk, state, reading.reader, last_only=True).state
            elif reading.note:  # close the turn as the log will, without the note: prefix, reply, turn end
                turn = torch.tensor([[*reading.prompt, *generation.tokens, *model.tokenizer.chat.turn_end]],
                                    device=model.device)
                state = model(turn, reading.state, reading.reader, last_only=True).state
            else:
                turn_end = torch.tensor([model.tokenizer.chat.turn_end], device=model.device)
                state = model(turn_end, generation.state, reading.reader, last_only=True).state
        def log_reply() -> tuple[int, bool]:
            with self.sessions.begin() as db:
                return append_reply(db, session_id=session_id, reply=generation.reply, state=state.to_bytes(),
                                    position=state.position, read_at=reading.read_at)

        reply_event_id, forgotten_meanwhile = retry_transient(log_reply)
        if not forgotten_meanwhile:
            self._remember(session_id, reading.session_created_at, state)
        return reply_event_id

    @staticmethod
    def _without_prefix(reading: _Reading) -> list[int]:
        """The turn's prompt without the assistant's prefix: what a session's state reads when it holds no replies."""
        return reading.prompt[: -len(reading.model.tokenizer.chat.prefix("assistant"))]

    def _note(self, db: Session, model: LanguageModel, session_id: int, state: State | None,
              unread: list[Event], message: list[int]) -> list[int]:
        """What an imported chat model is reminded of before it answers (agent.recall_note); [] if nothing."""
        if not (self.recall_in_context and model.capabilities.notes_in_context):
            return []
        return recalled_note(db, store=self.store, model=model, session_id=session_id, state=state,
                             message=unread[-1].content, message_tokens=message, min_score=self.recall_min_score,
                             max_bytes=self.recall_max_bytes, events_read=unread[0].seq,
                             replies_read=self.context_holds_replies)

    def _enqueue_learning(self, event_id: int) -> None:
        try:
            enqueue_learning(self.celery, agent_id=self.agent_id, event_id=event_id)
        except Exception as exc:  # the turn is logged; every worker start re-enqueues pending work
            log.warning("agent %s: could not enqueue learning through event %s (%s); it stays pending in SQL",
                        self.agent_id, event_id, exc)

    def recall(self, db: Session, *, query: str, limit: int) -> list[RecallHit]:
        self.serving.refresh()
        self.store.catch_up()
        return recall(db, store=self.store, model=self.serving.current().model, text=query, limit=limit)


class Runtimes:
    """The runtimes of the agents this process has served, loaded on first use."""

    def __init__(self, *, settings: Settings, sessions: sessionmaker[Session], celery: Celery):
        self.settings, self.sessions, self.celery = settings, sessions, celery
        self._runtimes: OrderedDict[int, AgentRuntime] = OrderedDict()  # least recently asked for first
        # One serving copy per base, shared by its agents: a version's model shares every tensor it does not learn
        # with it (agent.serving), and the int8 and prompt copies of SmolLM2-135M are about 0.5 GB, which each
        # agent held a copy of before. Held while an agent's runtime holds it.
        self._bases: weakref.WeakValueDictionary[str, LanguageModel] = weakref.WeakValueDictionary()
        self._lock = threading.Lock()
        self._order_lock = threading.Lock()  # the runtimes' order and membership

    def get(self, agent: Agent) -> AgentRuntime:
        runtime = self._runtimes.get(agent.id)
        if runtime is None or runtime.created_at != agent.created_at:
            with self._lock:  # one load at a time; loading reads a checkpoint and the agent's memory
                runtime = self._runtimes.get(agent.id)
                if runtime is None or runtime.created_at != agent.created_at:
                    runtime = AgentRuntime(agent=agent, sessions=self.sessions, celery=self.celery,
                                           settings=self.settings, base=self._base(agent.base_checkpoint))
                    with self._order_lock:
                        self._runtimes[agent.id] = runtime
        with self._order_lock:  # a loaded agent's turn never waits for another agent's load
            if self._runtimes.get(agent.id) is runtime:
                self._runtimes.move_to_end(agent.id)
            self._evict()
        return runtime

    def _evict(self) -> None:
        """Unload the agents asked for least recently while what they hold passes Settings.memory_ram_bytes, the
        one just asked for aside. An unloaded agent's turn in flight finishes on the runtime it holds; its next
        one loads it again from its snapshot and SQL (the caller holds the order lock)."""
        budget = self.settings.memory_ram_bytes
        if budget is None:
            return
        held = {agent_id: runtime.nbytes for agent_id, runtime in self._runtimes.items()}
        total = sum(held.values())
        for agent_id in list(self._runtimes)[:-1]:
            if total <= budget:
                break
            log.info("agent %s unloaded (%d bytes): the loaded agents held %d, LIFELONG_MEMORY_RAM_BYTES is %d",
                     agent_id, held[agent_id], total, budget)
            del self._runtimes[agent_id]
            total -= held[agent_id]

    def _base(self, checkpoint: str) -> LanguageModel:
        """The serving copy of base `checkpoint` that this process's agents share (the caller holds the lock)."""
        base = self._bases.get(checkpoint)
        if base is None:
            base = load_serving_base(checkpoint, self.settings.device, self.settings.serving_weights).eval()
            self._bases[checkpoint] = base
        return base

    def drop(self, agent_id: int) -> None:
        with self._order_lock:
            self._runtimes.pop(agent_id, None)

    def loaded(self) -> list[AgentRuntime]:
        """The loaded runtimes, least recently asked for first."""
        with self._order_lock:
            return list(self._runtimes.values())
