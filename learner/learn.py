"""Learning an agent's event log exactly once and in order: the domain function behind `learn` tasks.

`learn_through` learns every event of an agent that is neither learned nor failed, up to a given
event id, in id order, and commits everything in ONE transaction: each event's learned_at and
prequential bits, the memory rows of what it read, each session's learner stream state, and a new
weight version. A task naming a later event therefore also learns the earlier ones, so delivery order
cannot reorder learning, and a task whose events are learned already is a no-op.

The memories that supplied predictions while the events were read get their hit counts in that
same transaction (`memory.hits`), so hits are exactly once too.

Exactly once is a database property: the commit happens under a per-agent lock (SELECT ... FOR NO KEY
UPDATE on PostgreSQL, which leaves inserting events free; SQLite's one write lock) after checking that
nothing the work was based on has changed: the agent's newest version and the events' state. If
anything has, the work is discarded and redone from what committed. The gradient steps run outside
the lock because SQLite has a single write lock per database: holding it through seconds of compute
would stall every chat append of every agent.

Letters: T time, D head dim.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

import torch
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from learner.base import learning_config, load_base
from learner.gate import GateState, Verdict, close_window, due, open_window
from learner.online import Chunk, OnlineLearner, step_tokens, stream_chunks
from learner.versions import VersionNotFound, latest_version, load_weights, prune_versions, publish_version
from memory.db import AgentGone, lock_agent
from memory.eventlog import drop_finished_stream, learning_status
from memory.hits import record_hits, rows_supplying
from memory.pair_format import format_for
from memory.schema import Agent, Document, Event, ForgetJob, StreamCheckpoint, StreamSession
from memory.store import MemoryStore, Span, StoreConfig, memory_for
from memory.stream_format import EventReading
from models import LanguageModel, State

log = logging.getLogger(__name__)

# Redo limit when other learners keep committing first; past it the caller retries later.
MAX_ATTEMPTS = 8
# A forget job in these states holds its agent's learning (learner.replay).
ACTIVE_JOB_STATUSES = ("queued", "replaying")
# An event still to learn: neither learned, nor failed, nor forgotten.
PENDING = (Event.learned_at.is_(None), Event.failed_reason.is_(None), Event.forgotten_at.is_(None))


class LearnConflict(RuntimeError):
    """Other learners of this agent kept committing first; a transient condition, worth a retry."""


@dataclass
class AgentLearner:
    """One agent's model at one version, with its online learner; cached by a worker process."""

    agent_id: int
    spec: tuple[str, str]  # (base checkpoint, learning settings as JSON): a change means rebuild
    model: LanguageModel
    learner: OnlineLearner
    store: MemoryStore
    version: int
    probe_int8: bool = False  # the gate probes the weights as serving holds them (learner.gate)
    probe_compiled: bool = False  # and decodes its replies as serving does (Settings.compiled_decode)
    gate: GateState = field(default_factory=GateState)

    def learned_weights(self) -> dict[str, torch.Tensor]:
        """The learned parameters, and the gate's state (learner.gate): what a version stores."""
        return {**{name: param.detach().clone() for name, param in self.learner.params.items()},
                **self.gate.carried()}

    @torch.no_grad()
    def adopt(self, weights: dict[str, torch.Tensor]) -> None:
        """Set the learned parameters, and the gate's state, to a version's (anchoring still pulls toward the
        base)."""
        params = dict(self.model.named_parameters())
        for name, base in self.learner.base.items():
            params[name].copy_(weights.get(name, base))
        self.gate = GateState.read(weights)


class LearnerCache:
    """Per worker process: the last model of each agent, reused while no one else publishes a version."""

    def __init__(self, sessions: sessionmaker[Session], device: str = "cpu", store_config: StoreConfig = StoreConfig(),
                 memory_attention: bool = False, serving_int8: bool = True, compiled_decode: bool = False):
        self.sessions = sessions
        self.device = device
        self.store_config = store_config
        self.memory_attention = memory_attention  # Settings.memory_attention: as serving reads, so does learning
        self.serving_int8 = serving_int8  # Settings.serving_weights == "int8": the gate probes what serving reads
        self.compiled_decode = compiled_decode  # Settings.compiled_decode: and decodes as serving decodes
        self._agents: dict[int, AgentLearner] = {}

    def build(self, agent: Agent, *, id_ceiling: int | None = None) -> AgentLearner:
        """A fresh model of the agent's base with its online learner and a caught-up store (at version -1:
        no weights adopted yet). A replay builds its own this way, its store limited to ids below `id_ceiling`."""
        model = load_base(agent.base_checkpoint, self.device)
        if model.capabilities.windowed_state:
            # Key/value windows, stored per session with every batch: bf16 halves them (the serving
            # runtime keeps its windows in bf16 too).
            model.cache_dtype = torch.bfloat16
        learner = OnlineLearner(model, learning_config(agent.learning_settings,
                                                       imported=model.capabilities.pretrained))
        store = MemoryStore(agent_id=agent.id, sessions=self.sessions, head_dim=model.config.head_dim,
                            channels=model.config.memory_channels,
                            search_openings=model.config.memory_searches_openings, config=self.store_config,
                            pair_format=format_for(model.config, attends=self.memory_attention))
        store.id_ceiling = id_ceiling
        store.rebuild()
        return AgentLearner(agent.id, learner_spec(agent), model, learner, store, version=-1,
                            probe_int8=self.serving_int8, probe_compiled=self.compiled_decode)

    def get(self, agent: Agent, version: int) -> AgentLearner:
        cached = self._agents.get(agent.id)
        if cached is None or cached.spec != learner_spec(agent):
            cached = self.build(agent)
        if cached.version != version:
            with self.sessions() as db:
                cached.adopt(load_weights(db, agent.id, version))
            cached.version = version
        self._agents[agent.id] = cached
        return cached

    def forget(self, agent_id: int) -> None:
        """Drop an agent whose in-RAM weights may no longer match any committed version."""
        self._agents.pop(agent_id, None)


def learner_spec(agent: Agent) -> tuple[str, str]:
    """What a cached learner was built from: a change means rebuild."""
    return agent.base_checkpoint, repr(sorted((agent.learning_settings or {}).items()))


def forget_job_active(db: Session, agent_id: int) -> bool:
    """Whether a forget job of the agent is queued or replaying: then it learns nothing new until the
    replay's result is published (learner.replay), so new events are learned after it, in order."""
    return db.scalar(select(ForgetJob.id).where(ForgetJob.agent_id == agent_id,
                                                ForgetJob.status.in_(ACTIVE_JOB_STATUSES)).limit(1)) is not None


@dataclass(frozen=True)
class LearnPlan:
    """What the work is based on, read in one short transaction."""

    agent: Agent
    version: int
    events: list[Event]
    streams: dict[int, tuple[bytes | None, int | None]]  # session id -> (learn_state, learn_last_token)
    learned_before: int = 0  # the agent's events learned and not forgotten before these (when a gate falls due)


@dataclass
class LearnReport:
    version: int  # the agent's version after this call
    events: int = 0  # events learned by this call
    tokens: int = 0
    bits: float = 0.0  # prequential: summed before learning from each chunk
    attempts: int = 0
    event_ids: list[int] = field(default_factory=list)


def _read_plan(db: Session, agent_id: int, through_event_id: int, max_events: int) -> LearnPlan | None:
    agent = db.get(Agent, agent_id)
    if agent is None:
        return None
    if forget_job_active(db, agent_id):  # the replay's publish comes first; its task then enqueues the rest
        return LearnPlan(agent, latest_version(db, agent_id), [], {})
    events = list(db.scalars(
        select(Event).where(Event.agent_id == agent_id, Event.id <= through_event_id, *PENDING)
        .order_by(Event.id).limit(max_events)))
    session_ids = sorted({event.session_id for event in events})
    streams = {row.id: (row.learn_state, row.learn_last_token) for row in db.execute(
        select(StreamSession.id, StreamSession.learn_state, StreamSession.learn_last_token)
        .where(StreamSession.id.in_(session_ids)))}
    return LearnPlan(agent, latest_version(db, agent_id), events, streams,
                     learned_count(db, agent_id, events[0].id) if events else 0)


def learned_count(db: Session, agent_id: int, before_event_id: int) -> int:
    """The agent's events learned and not forgotten before `before_event_id`."""
    return db.scalar(select(func.count()).select_from(Event).where(
        Event.agent_id == agent_id, Event.id < before_event_id, Event.learned_at.is_not(None),
        Event.forgotten_at.is_(None)))


@dataclass
class Learned:
    bits: dict[int, float]  # event id -> prequential bits
    tokens: int
    spans: list[Span]
    streams: dict[int, tuple[bytes, int]]  # session id -> new (learn_state, learn_last_token)
    hits: Counter[int] = field(default_factory=Counter)  # memory id -> positions whose prediction it supplied
    gates: list[Verdict] = field(default_factory=list)  # the gates that fell due, in order


def learn_events(agent_learner: AgentLearner, plan: LearnPlan, chunk_tokens: int, memory_attention: bool) -> Learned:
    """The learning step, outside any lock: score and learn each of the plan's events in order, from its
    session's learner state; what to commit (a replay re-learns forgotten history with it too)."""
    model, learner = agent_learner.model, agent_learner.learner
    if memory_for(model, agent_learner.store, None, attend=memory_attention) is not None:
        agent_learner.store.catch_up()  # once per batch: the steps' searches read RAM only
    states: dict[int, State] = {}
    last_tokens: dict[int, int | None] = {}
    for session_id, (blob, last) in plan.streams.items():
        states[session_id] = State.from_bytes(blob).to(model.device) if blob else model.init_state(1)
        last_tokens[session_id] = last
    out = Learned(bits={}, tokens=0, spans=[], streams={})
    every = learner.config.gate_every if learner.config.learning_rate > 0 else 0  # unmoved weights always pass
    for number, event in enumerate(plan.events):
        if every:
            open_window(agent_learner.gate, learner.params)
        reading = EventReading.after(event, last_tokens[event.session_id], model.tokenizer)
        state, bits, start = states[event.session_id], 0.0, 0
        stream = torch.tensor([reading.tokens], device=model.device)
        memory = memory_for(model, agent_learner.store, event.session_id, attend=memory_attention)
        for inputs, targets in stream_chunks(stream, step_tokens(model, chunk_tokens)):
            position = state.position  # of the chunk's first input in the session's stream
            step = learner.step(Chunk(inputs, targets, state), memory, learn=learner.learns_from(event.role))
            state = step.state
            bits += step.loss * step.tokens / math.log(2)
            out.tokens += step.tokens
            if step.memory_kv is not None:
                out.spans += reading.memory_spans(start, step.memory_kv.keys[0], step.memory_kv.values[0],
                                                  plan.version, position)
            if step.recalled_ids is not None:
                out.hits += rows_supplying(step.recalled_ids.cpu().numpy(), step.recalled_shares.cpu().numpy())
            start += inputs.shape[1]
        states[event.session_id], last_tokens[event.session_id] = state, reading.tokens[-1]
        out.bits[event.id] = bits
        if due(plan.learned_before + number, 1, every):
            out.gates.append(close_window(agent_learner.gate, model, learner.params, int8=agent_learner.probe_int8,
                                          compiled=agent_learner.probe_compiled))
    out.streams = {sid: (states[sid].to_bytes(), last_tokens[sid]) for sid in plan.streams}
    return out


def _unchanged(db: Session, plan: LearnPlan) -> bool:
    if latest_version(db, plan.agent.id) != plan.version or forget_job_active(db, plan.agent.id):
        return False
    ids = [event.id for event in plan.events]
    changed = db.scalar(select(Event.id).where(
        Event.id.in_(ids), (Event.learned_at.is_not(None)) | (Event.failed_reason.is_not(None))
        | (Event.forgotten_at.is_not(None))).limit(1))
    return changed is None


def hits_record(hits: Counter[int]) -> dict[str, int]:
    """An event's `hits` as stored (JSON keys are text)."""
    return {str(memory_id): count for memory_id, count in sorted(hits.items())}


def checkpoint_streams(db: Session, *, agent_id: int) -> int:
    """Keep the learner state of every session that learned since its last stream checkpoint, as of its last
    learned event; returns how many. Called at every version kept for replays (`keep_version_every`), so a
    replay from one finds each session's state there (learner.replay). Only there: an imported model's state
    is tens of megabytes, too much to keep per event."""
    learned = dict(db.execute(select(Event.session_id, func.max(Event.id)).where(
        Event.agent_id == agent_id, Event.learned_at.is_not(None), Event.forgotten_at.is_(None))
        .group_by(Event.session_id)).all())
    kept = dict(db.execute(select(StreamCheckpoint.session_id, func.max(StreamCheckpoint.event_id))
                           .where(StreamCheckpoint.agent_id == agent_id).group_by(StreamCheckpoint.session_id)).all())
    behind = sorted(session_id for session_id, last in learned.items() if kept.get(session_id, 0) < last)
    if not behind:
        return 0
    states = db.execute(select(StreamSession.id, StreamSession.learn_state, StreamSession.learn_last_token)
                        .where(StreamSession.id.in_(behind), StreamSession.learn_state.is_not(None))).all()
    db.add_all([StreamCheckpoint(agent_id=agent_id, session_id=session_id, event_id=learned[session_id],
                                 learn_state=blob, learn_last_token=last) for session_id, blob, last in states])
    return len(states)


def _commit(db: Session, plan: LearnPlan, learned: Learned, agent_learner: AgentLearner, keep_versions: int,
            keep_version_every: int) -> int:
    now = datetime.now(UTC)
    for event in plan.events:
        db.execute(update(Event).where(Event.id == event.id)
                   .values(learned_at=now, learned_bits=learned.bits[event.id]))
    for session_id, (blob, last) in learned.streams.items():
        db.execute(
            update(StreamSession)
            .where(StreamSession.id == session_id)
            .values(learn_state=blob, learn_last_token=last, updated_at=now)
        )
    agent_learner.store.add_spans(learned.spans, db=db)
    record_hits(db, agent_id=plan.agent.id, hits=learned.hits)
    if learned.hits:  # kept with the batch's last event: a replay starts at a batch's end, never inside one
        db.execute(update(Event).where(Event.id == plan.events[-1].id).values(hits=hits_record(learned.hits)))
    per_document: dict[int, int] = {}
    streams_of: dict[int, int] = {}
    for event in plan.events:
        if event.document_id is not None:
            per_document[event.document_id] = per_document.get(event.document_id, 0) + len(event.content)
            streams_of[event.document_id] = event.session_id
    for document_id, count in per_document.items():
        document = db.get(Document, document_id)
        document.bytes_processed += count
        # A document still arriving (or failed, or forgotten) keeps its status; finish_document sets it under
        # this lock.
        if document.status not in ("receiving", "failed", "forgotten"):
            document.status = learning_status(
                bytes_received=document.bytes_received, bytes_processed=document.bytes_processed
            )
        if document.status == "learned":
            drop_finished_stream(db, session_id=streams_of[document_id])
    version = publish_version(db, agent_id=plan.agent.id, weights=agent_learner.learned_weights(),
                              parent_version=plan.version, events_learned_through=plan.events[-1].id,
                              gate=learned.gates[-1].record() if learned.gates else None)
    if keep_version_every and version % keep_version_every == 0:
        db.flush()  # the sessions' new states, which the checkpoint copies
        checkpoint_streams(db, agent_id=plan.agent.id)
    prune_versions(db, agent_id=plan.agent.id, keep=keep_versions, keep_every=keep_version_every)
    return version


@dataclass(frozen=True)
class LearnOptions:
    chunk_tokens: int = 2048  # tokens per learning step
    keep_versions: int = 10  # weight versions kept (learner.versions.prune_versions)
    keep_version_every: int = 0  # and every N-th one besides; 0: none
    max_events: int = 1  # events per batch: one transaction, one version


def learn_through(sessions: sessionmaker[Session], cache: LearnerCache, *, agent_id: int, event_id: int,
                  chunk_tokens: int = 2048, keep_versions: int = 10, keep_version_every: int = 0,
                  max_events: int = 1) -> LearnReport:
    """Learn the agent's pending events up to `event_id`, exactly once; returns what this call did.
    The options are `LearnOptions`'.

    A backlog commits in batches of `max_events` events, each batch one transaction and one version.
    With the default of one event per batch, each event retrieves the memories of every event before
    it, exactly as if the tasks had been delivered one by one in order (a batch's memory rows become
    searchable only when it commits).
    """
    run = LearnOptions(chunk_tokens, keep_versions, keep_version_every, max_events)
    total = LearnReport(version=0)
    while True:
        batch = _learn_batch(sessions, cache, agent_id=agent_id, event_id=event_id, options=run)
        total.version = batch.version
        total.attempts += batch.attempts
        if not batch.events:
            return total
        total.events += batch.events
        total.tokens += batch.tokens
        total.bits += batch.bits
        total.event_ids += batch.event_ids


def _learn_batch(sessions: sessionmaker[Session], cache: LearnerCache, *, agent_id: int, event_id: int,
                 options: LearnOptions) -> LearnReport:
    for attempt in range(1, MAX_ATTEMPTS + 1):
        with sessions() as db:
            plan = _read_plan(db, agent_id, event_id, options.max_events)
        if plan is None:
            cache.forget(agent_id)  # and its store: a later agent must never inherit either
            raise AgentGone(f"agent {agent_id} does not exist")
        if not plan.events:
            return LearnReport(version=plan.version, attempts=attempt)
        try:
            agent_learner = cache.get(plan.agent, plan.version)
        except VersionNotFound:  # pruned since the plan was read: newer versions exist, so plan again
            continue
        try:
            learned = learn_events(agent_learner, plan, options.chunk_tokens, cache.memory_attention)
            with sessions.begin() as db:
                lock_agent(db, agent_id)  # AgentGone if deleted while this batch learned: nothing is written
                version = (_commit(db, plan, learned, agent_learner, options.keep_versions, options.keep_version_every)
                           if _unchanged(db, plan) else None)
        except BaseException:
            cache.forget(agent_id)  # RAM weights moved past every committed version
            raise
        if version is None:
            cache.forget(agent_id)
            log.info("agent %s: another learner committed first; redoing (attempt %d)", agent_id, attempt)
            continue
        agent_learner.version = version
        return LearnReport(
            version=version,
            events=len(plan.events),
            tokens=learned.tokens,
            bits=sum(learned.bits.values()),
            attempts=attempt,
            event_ids=[e.id for e in plan.events],
        )
    raise LearnConflict(f"agent {agent_id}: other learners committed first {MAX_ATTEMPTS} times; retry later")
