"""Forget jobs: roll the weights back to before the earliest forgotten event, re-learn everything after it but
the forgotten events, and publish the result in one step.

Exact by construction: learning depends only on the weights, the sessions' learner states, the events'
bytes in order and the memory each event read (no RNG, no optimizer state: the online step is stateless,
learner.online). A replay restores the first three from a kept version and its stream checkpoints, and reads
the memory as it stood when each event was first learned, less what was deleted (`MemoryStore.id_ceiling`).
So the result equals, bit for bit, the weights of an agent that never saw the forgotten events.

Each event is re-learned by the normal learning step (`learner.learn.learn_events`, one event per batch as the
learner commits them). An agent learns "downstream" of its stored keys (learner.base.learning_config), so an
event's memory pairs depend only on its stream: where the stream is unchanged the replay recomputes them and
checks they are bit for bit the stored ones (`ReplayMismatch` if not). Where the stream lost an earlier
event (one turn of a chat forgotten, one chunk of a document), the later events were read after it, and their
pairs still carry it: they are rewritten as read without it (`MemoryStore.replace_rows`: new ids, the old
rows tombstoned, so every serving process follows). Serving keeps the current weights until `_publish` commits the new
version, the sessions' learner states and the job's end in one transaction; the agent learns nothing new
meanwhile (learner.learn.forget_job_active), and its waiting events are learned after, in order.

Progress is checkpointed in the job (weights, session states, the last event re-learned), so a worker
killed mid-replay resumes where the last checkpoint left it, with the same result.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from learner.learn import (
    ACTIVE_JOB_STATUSES,
    AgentLearner,
    LearnerCache,
    LearnPlan,
    hits_record,
    learn_events,
    learned_count,
)
from learner.versions import decode_weights, encode_weights, load_weights, weights_sha256
from memory.db import AgentGone, lock_agent
from memory.hits import record_hits, remove_hits
from memory.schema import (
    Agent,
    Event,
    ForgetJob,
    ForgetJobStream,
    Memory,
    StreamCheckpoint,
    StreamSession,
    WeightVersion,
)

log = logging.getLogger(__name__)

# Events re-learned per read of the log (bounded memory whatever the replay's length).
EVENTS_PER_READ = 64


class ReplayMismatch(RuntimeError):
    """A replayed event's memory pairs differ from the stored ones: the replay is not the agent's history."""


@dataclass(frozen=True)
class ReplayReport:
    job_id: int
    version: int | None  # published; None if the job was no longer active
    events: int  # re-learned by this call (a resumed job counts only its rest)


def run_forget_jobs(sessions: sessionmaker[Session], cache: LearnerCache, *, agent_id: int, chunk_tokens: int = 2048,
                    checkpoint_every_s: float = 5.0) -> list[ReplayReport]:
    """Run the agent's active forget jobs, oldest first, each to its publish; returns what each did.

    `checkpoint_every_s`: the most seconds of replay a killed worker loses (0: a checkpoint per event).
    """
    reports = []
    while True:
        with sessions() as db:
            if db.get(Agent, agent_id) is None:
                cache.forget(agent_id)
                raise AgentGone(f"agent {agent_id} does not exist")
            job_id = db.scalar(select(ForgetJob.id).where(ForgetJob.agent_id == agent_id,
                                                          ForgetJob.status.in_(ACTIVE_JOB_STATUSES))
                               .order_by(ForgetJob.id).limit(1))
        if job_id is None:
            return reports
        reports.append(_run(sessions, cache, job_id, chunk_tokens, checkpoint_every_s))
        cache.forget(agent_id)  # its cached learner is at a version the publish replaced


def _run(sessions: sessionmaker[Session], cache: LearnerCache, job_id: int, chunk_tokens: int,
         checkpoint_every_s: float) -> ReplayReport:
    with sessions() as db:
        queued = db.get(ForgetJob, job_id)
    if queued is None:  # deleted with its agent
        raise AgentGone(f"forget job {job_id} is gone with its agent")
    if queued.status == "queued":
        with sessions.begin() as db:
            lock_agent(db, queued.agent_id)  # first: on SQLite a transaction that read first cannot take it
            job = db.get(ForgetJob, job_id)
            if job.status == "queued":
                _start(db, job)
    with sessions() as db:
        job = db.get(ForgetJob, job_id)
        agent = db.get(Agent, queued.agent_id)
        if job is None or agent is None:
            raise AgentGone(f"agent {queued.agent_id} was deleted")
        weights = decode_weights(job.checkpoint_weights)
        streams = {row.session_id: (row.learn_state, row.learn_last_token)
                   for row in db.scalars(select(ForgetJobStream).where(ForgetJobStream.job_id == job_id))}
        through, done, done_bytes = job.replayed_through, job.events_done, job.bytes_done
    if job.status != "replaying":  # another worker finished it (or it failed) meanwhile
        return ReplayReport(job_id=job_id, version=None, events=0)
    learner: AgentLearner | None = None
    bits: dict[int, float] = {}
    hits: dict[int, Counter[int]] = {}  # since the last checkpoint: event id -> memory id -> count
    touched: set[int] = set()
    last_checkpoint, count = time.monotonic(), 0
    changed = _changed_streams(sessions, agent.id, job.from_event_id)
    while True:
        events, ceilings = _next_events(sessions, agent.id, through)
        if not events:
            break
        with sessions() as db:  # where the gate falls due: as for an agent that never read what is forgotten
            learned_before = learned_count(db, agent.id, events[0].id)
        for number, event in enumerate(events):
            if learner is None:
                learner = cache.build(agent, id_ceiling=ceilings[event.id])
                learner.adopt(weights)
            learner.store.id_ceiling = ceilings[event.id]
            plan = LearnPlan(agent, job.from_version, [event], {event.session_id: streams[event.session_id]},
                             learned_before + number)
            learned = learn_events(learner, plan, chunk_tokens, cache.memory_attention)
            _reconcile_pairs(sessions, learner, event, learned.spans,
                             rewrite=event.id > changed.get(event.session_id, event.id))
            streams[event.session_id] = learned.streams[event.session_id]
            bits[event.id] = learned.bits[event.id]
            if learned.hits:
                hits[event.id] = learned.hits
            touched.add(event.session_id)
            through, done, done_bytes, count = event.id, done + 1, done_bytes + len(event.content), count + 1
            if time.monotonic() - last_checkpoint >= checkpoint_every_s:
                if _checkpoint(sessions, job_id, agent.id, learner, streams, touched, bits, hits, through, done,
                               done_bytes):
                    touched, bits, hits = set(), {}, {}
                last_checkpoint = time.monotonic()
    final = learner.learned_weights() if learner is not None else weights
    with sessions.begin() as db:
        lock_agent(db, agent.id)
        version = _publish(db, job_id, final, streams, bits, hits, through, done, done_bytes)
    log.info("agent %s: forget job %s re-learned %d events, published version %s", agent.id, job_id, count, version)
    return ReplayReport(job_id=job_id, version=version, events=count)


def _start(db: Session, job: ForgetJob) -> None:
    """Choose the version to replay from and record it, its weights and the sessions' states as the job's
    first checkpoint (so pruning can never take them from under a resumed replay); the caller holds the lock."""
    version, through, states = _replay_origin(db, job.agent_id, job.first_event_id)
    totals = db.execute(select(func.count(), func.coalesce(func.sum(func.length(Event.content)), 0)).where(
        Event.agent_id == job.agent_id, Event.id > through, Event.learned_at.is_not(None),
        Event.forgotten_at.is_(None))).one()
    job.status, job.from_version, job.from_event_id, job.replayed_through = "replaying", version, through, through
    job.events_total, job.bytes_total = totals[0], totals[1]
    job.checkpoint_weights = encode_weights(load_weights(db, job.agent_id, version))
    # What the events after the origin added to hit counts goes; the replay adds its own back as it goes.
    counted: Counter[int] = Counter()
    for hits in db.scalars(select(Event.hits).where(Event.agent_id == job.agent_id, Event.id > through,
                                                    Event.hits.is_not(None))):
        counted.update({int(memory_id): count for memory_id, count in hits.items()})
    remove_hits(db, agent_id=job.agent_id, hits=counted)
    db.execute(update(Event).where(Event.agent_id == job.agent_id, Event.id > through).values(hits=None))
    # Every session with a learned event after the origin, forgotten ones included: a session whose
    # every later event is forgotten goes back to its state at the origin.
    session_ids = set(db.scalars(select(Event.session_id).where(Event.agent_id == job.agent_id, Event.id > through,
                                                                Event.learned_at.is_not(None)).distinct()))
    db.add_all([ForgetJobStream(job_id=job.id, session_id=sid, learn_state=states.get(sid, (None, None))[0],
                                learn_last_token=states.get(sid, (None, None))[1]) for sid in sorted(session_ids)])


def _replay_origin(db: Session, agent_id: int, first_event_id: int) -> tuple[int, int, dict[int, tuple[bytes, int]]]:
    """(version, its last learned event, session id -> learner state there) of the newest kept version from
    before `first_event_id` whose sessions' states are all kept; version 0 (the base, fresh states) else."""
    candidates = db.execute(
        select(WeightVersion.version, WeightVersion.events_learned_through)
        .where(WeightVersion.agent_id == agent_id, WeightVersion.events_learned_through < first_event_id)
        .order_by(WeightVersion.version.desc())).all()
    for version, through in candidates:
        states = _states_at(db, agent_id, through)
        if states is not None:
            return version, through, states
    return 0, 0, {}


def _states_at(db: Session, agent_id: int, through: int) -> dict[int, tuple[bytes, int]] | None:
    """The learner states, after event `through`, of the sessions that learned events on both sides of it;
    None if a stream checkpoint one of them needs was not kept."""
    learned = (Event.agent_id == agent_id, Event.learned_at.is_not(None), Event.forgotten_at.is_(None))
    # Forgotten events count here: a session whose every later event is forgotten returns to this state.
    later = select(Event.session_id).where(Event.agent_id == agent_id, Event.learned_at.is_not(None),
                                           Event.id > through).distinct()
    needed = db.execute(select(Event.session_id, func.max(Event.id)).where(
        *learned, Event.id <= through, Event.session_id.in_(later)).group_by(Event.session_id)).all()
    states = {}
    for session_id, event_id in needed:
        row = db.execute(select(StreamCheckpoint.learn_state, StreamCheckpoint.learn_last_token).where(
            StreamCheckpoint.session_id == session_id, StreamCheckpoint.event_id == event_id)).first()
        if row is None:
            return None
        states[session_id] = (row.learn_state, row.learn_last_token)
    return states


def _next_events(sessions: sessionmaker[Session], agent_id: int,
                 after: int) -> tuple[list[Event], dict[int, int | None]]:
    """The next events to re-learn (learned, not forgotten, after `after`) and, for each, its memory ceiling:
    the first memory id written by learning it or a later event (None: none was), below which is the memory
    it read when first learned."""
    with sessions() as db:
        events = list(db.scalars(select(Event).where(
            Event.agent_id == agent_id, Event.id > after, Event.learned_at.is_not(None),
            Event.forgotten_at.is_(None)).order_by(Event.id).limit(EVENTS_PER_READ)))
        if not events:
            return [], {}
        first_rows = db.execute(select(Memory.event_id, func.min(Memory.id)).where(
            Memory.agent_id == agent_id, Memory.event_id >= events[0].id).group_by(Memory.event_id)).all()
    first_row = sorted(first_rows, reverse=True)
    ceilings: dict[int, int | None] = {}
    lowest: int | None = None
    for event in reversed(events):
        while first_row and first_row[0][0] >= event.id:
            row_id = first_row.pop(0)[1]
            lowest = row_id if lowest is None else min(lowest, row_id)
        ceilings[event.id] = lowest
    return events, ceilings


def _changed_streams(sessions: sessionmaker[Session], agent_id: int, origin: int) -> dict[int, int]:
    """Session id -> its first learned event forgotten after the replay's origin: the events after it in that
    session are read without it now."""
    with sessions() as db:
        return dict(db.execute(select(Event.session_id, func.min(Event.id)).where(
            Event.agent_id == agent_id, Event.id > origin, Event.learned_at.is_not(None),
            Event.forgotten_at.is_not(None)).group_by(Event.session_id)).all())


def _reconcile_pairs(sessions: sessionmaker[Session], learner: AgentLearner, event: Event, spans,
                     rewrite: bool) -> None:
    """Every stored memory row of `event` must be one the replay computed, bit for bit; where its stream lost
    an earlier event (`rewrite`), differing rows are replaced by the computed ones instead."""
    store = learner.store
    computed = {(span.byte_start, span.byte_end, span.token_start, *store.pair_format.encode(span.keys, span.values))
                for span in spans}
    with sessions() as db:
        stored = db.execute(select(Memory.id, Memory.byte_start, Memory.byte_end, Memory.token_start, Memory.keys,
                                   Memory.values, Memory.pair_format, Memory.num_tokens)
                            .where(Memory.event_id == event.id)).all()
    # A row of an older format is compared as the store would write it now (memory.pair_format).
    differing = [row for row in stored if (row.byte_start, row.byte_end, row.token_start,
                                           *(store.encoded(bytes(row.keys), bytes(row.values), row.pair_format,
                                                           row.num_tokens) or (None, None))) not in computed]
    if not differing:
        return
    if not rewrite:
        row = differing[0]
        raise ReplayMismatch(f"event {event.id}: the replay computed other memory pairs for bytes "
                             f"{row.byte_start}-{row.byte_end} than those stored")
    # Every row of the event, so that its rows stay one reading's (spans may split differently now); a span
    # only where stored rows covered all its bytes: what a person deleted from the memory stays deleted.
    covered = _merged((row.byte_start, row.byte_end) for row in stored)
    kept = [span for span in spans if any(start <= span.byte_start and span.byte_end <= end for start, end in covered)]
    learner.store.replace_rows([row.id for row in stored], kept)


def _merged(ranges) -> list[tuple[int, int]]:
    """Byte ranges merged where they touch or overlap, in order."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _checkpoint(sessions: sessionmaker[Session], job_id: int, agent_id: int, learner: AgentLearner,
                streams: dict[int, tuple[bytes | None, int | None]], touched: set[int], bits: dict[int, float],
                hits: dict[int, Counter[int]], through: int, done: int, done_bytes: int) -> bool:
    """Save the replay's progress; returns whether it did. A checkpoint never goes back: where two workers
    replay one job (a redelivery beside a restart's re-enqueue), the one behind leaves the other's in place and
    keeps what it has not saved (both compute the same sequence, so either one's states fit the other's)."""
    with sessions.begin() as db:
        lock_agent(db, agent_id)  # first (SQLite), and before the event rows a learner's commit also writes
        job = db.get(ForgetJob, job_id)
        if job is None or job.status != "replaying" or job.replayed_through >= through:
            return False
        _record(db, agent_id, job.replayed_through, bits, hits)
        job.checkpoint_weights = encode_weights(learner.learned_weights())
        job.replayed_through, job.events_done, job.bytes_done = through, done, done_bytes
        for session_id in touched:
            db.execute(update(ForgetJobStream).where(ForgetJobStream.job_id == job_id,
                                                     ForgetJobStream.session_id == session_id)
                       .values(learn_state=streams[session_id][0], learn_last_token=streams[session_id][1]))
    return True


def _record(db: Session, agent_id: int, saved_through: int, bits: dict[int, float],
            hits: dict[int, Counter[int]]) -> None:
    """Re-learned events' prequential bits and hits, as their first learning recorded them; those of events up
    to the job's saved progress (`saved_through`) are in already (another worker's checkpoint), never twice."""
    for event_id, event_bits in bits.items():
        if event_id > saved_through:
            db.execute(update(Event).where(Event.id == event_id).values(learned_bits=event_bits))
    for event_id, event_hits in hits.items():
        if event_id <= saved_through:
            continue
        record_hits(db, agent_id=agent_id, hits=event_hits)
        db.execute(update(Event).where(Event.id == event_id).values(hits=hits_record(event_hits)))


def _publish(db: Session, job_id: int, weights, streams: dict[int, tuple[bytes | None, int | None]],
             bits: dict[int, float], hits: dict[int, Counter[int]], through: int, done: int,
             done_bytes: int) -> int | None:
    """One transaction: the new version, the sessions' learner states, the job done; every version that had
    learned a forgotten event goes (a rollback must never bring it back), and every stream checkpoint
    after the replay's origin (the replay's final states replace them)."""
    job = db.get(ForgetJob, job_id)
    if job is None or job.status != "replaying":
        return None
    agent_id = job.agent_id
    newest = db.scalar(select(func.max(WeightVersion.version)).where(WeightVersion.agent_id == agent_id)) or 0
    db.execute(delete(WeightVersion).where(WeightVersion.agent_id == agent_id,
                                           WeightVersion.events_learned_through >= job.first_event_id))
    blob = encode_weights(weights)
    # The next number, never a reused one: serving processes swap when the newest number changes.
    version = newest + 1
    db.add(WeightVersion(agent_id=agent_id, version=version, parent_version=job.from_version, weights=blob,
                         sha256=weights_sha256(blob), events_learned_through=through, tag=None))
    # The replay's range: its states are rewritten below (the final one of each session).
    db.execute(delete(StreamCheckpoint).where(StreamCheckpoint.agent_id == agent_id,
                                              StreamCheckpoint.event_id > job.from_event_id))
    last_replayed = dict(db.execute(select(Event.session_id, func.max(Event.id)).where(
        Event.agent_id == agent_id, Event.id > job.from_event_id, Event.id <= through, Event.learned_at.is_not(None),
        Event.forgotten_at.is_(None)).group_by(Event.session_id)).all())
    now = datetime.now(UTC)
    for session_id, (blob_state, last) in streams.items():
        db.execute(update(StreamSession).where(StreamSession.id == session_id)
                   .values(learn_state=blob_state, learn_last_token=last, updated_at=now))
        if session_id in last_replayed and blob_state is not None:
            db.add(StreamCheckpoint(agent_id=agent_id, session_id=session_id, event_id=last_replayed[session_id],
                                    learn_state=blob_state, learn_last_token=last))
    _record(db, agent_id, job.replayed_through, bits, hits)
    db.execute(delete(ForgetJobStream).where(ForgetJobStream.job_id == job_id))
    job.status, job.result_version, job.finished_at = "done", version, now
    job.replayed_through, job.events_done, job.bytes_done, job.checkpoint_weights = through, done, done_bytes, None
    db.flush()
    return version


def active_forget_agents(db: Session) -> list[int]:
    """Agents with a forget job queued or replaying."""
    return list(db.scalars(select(ForgetJob.agent_id).where(ForgetJob.status.in_(ACTIVE_JOB_STATUSES)).distinct()))


def fail_forget_jobs(db: Session, *, agent_id: int, reason: str) -> int:
    """Mark the agent's active forget jobs failed (its learning then goes on); returns how many."""
    lock_agent(db, agent_id)
    return db.execute(update(ForgetJob).where(ForgetJob.agent_id == agent_id,
                                              ForgetJob.status.in_(ACTIVE_JOB_STATUSES))
                      .values(status="failed", failed_reason=reason, finished_at=datetime.now(UTC))).rowcount
