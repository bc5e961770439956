"""The database audit after the drain, read directly in SQL: every event learned, failed or forgotten; none learned
twice; no memory of a deleted agent or of a forgotten event; no orphan rows; every document in a final status;
every forget job finished, and none failed; every message the API acknowledged in its session's log."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bench.soak.drain import ACTIVE_JOB_STATUSES
from bench.soak.world import World
from memory.db import make_engine, make_session_factory
from memory.schema import (
    Agent,
    ApiKey,
    Document,
    Event,
    ForgetJob,
    Memory,
    StreamCheckpoint,
    StreamSession,
    WeightVersion,
)

AUDIT_EXAMPLES = 10
FINAL_DOCUMENT_STATUSES = ("learned", "failed", "forgotten")


def check(rows: list, examples: Callable[[Any], Any] = lambda row: list(row), **extra: Any) -> dict:
    return {"ok": not rows, "count": len(rows), "examples": [examples(row) for row in rows[:AUDIT_EXAMPLES]], **extra}


def audit_events(db: Session) -> dict:
    """Every event learned, failed or forgotten; what is still pending fails the check."""
    learned = Event.learned_at.is_not(None)
    failed = Event.failed_reason.is_not(None)
    forgotten = Event.forgotten_at.is_not(None)

    def count(*where: Any) -> int:
        return db.scalar(select(func.count()).select_from(Event).where(*where))

    pending = db.execute(select(Event.id, Event.agent_id, Event.session_id, Event.role, Event.document_id)
                         .where(~learned, ~failed, ~forgotten).order_by(Event.id)).all()
    reasons = db.execute(select(Event.failed_reason, func.count()).where(failed).group_by(Event.failed_reason)
                         .order_by(func.count().desc()).limit(5)).all()
    return check(pending, lambda row: dict(row._mapping), learned=count(learned, ~forgotten), failed=count(failed),
                 forgotten=count(forgotten), pending=len(pending), total=count(),
                 failed_reasons=[{"reason": (r or "")[:200], "events": n} for r, n in reasons])


def audit_learned_once(db: Session) -> dict:
    """An event learned twice would leave its memory spans twice, or be both learned and failed."""
    twice = db.execute(select(Memory.event_id, Memory.byte_start, func.count()).where(Memory.event_id.is_not(None))
                       .group_by(Memory.event_id, Memory.byte_start).having(func.count() > 1)).all()
    both = db.execute(select(Event.id, Event.failed_reason).where(Event.learned_at.is_not(None),
                                                                   Event.failed_reason.is_not(None))).all()
    rows = [{"event_id": e, "byte_start": b, "memory_rows": n} for e, b, n in twice]
    rows += [{"event_id": e, "learned_and_failed": (r or "")[:200]} for e, r in both]
    return check(rows, lambda row: row)


def audit_orphans(db: Session) -> dict:
    """Rows whose agent no longer exists, and events whose session no longer exists."""
    agents = select(Agent.id)
    tables = {"sessions": StreamSession, "events": Event, "documents": Document, "memories": Memory,
              "weight_versions": WeightVersion, "forget_jobs": ForgetJob, "stream_checkpoints": StreamCheckpoint,
              "api_keys": ApiKey}
    rows, by_table = [], {}
    for table, model in tables.items():
        found = db.execute(select(model.id, model.agent_id).where(model.agent_id.is_not(None),
                                                                  model.agent_id.not_in(agents))).all()
        by_table[table] = len(found)
        rows += [{"table": table, "id": i, "agent_id": a} for i, a in found]
    lost = db.execute(select(Event.id, Event.session_id).where(Event.session_id.not_in(select(StreamSession.id)))).all()
    by_table["events_without_session"] = len(lost)
    rows += [{"table": "events", "id": i, "missing_session_id": s} for i, s in lost]
    return check(rows, lambda row: row, by_table=by_table)


def audit_turns(db: Session, world: World) -> dict:
    """Every acknowledged turn of an agent not deleted: both its events in its session's log, as sent."""
    gone = world.deleted | world.delete_unknown
    turns = [turn for turn in world.turns if turn.agent_id not in gone]
    rows = []
    for start in range(0, len(turns), 500):
        batch = turns[start : start + 500]
        ids = [i for turn in batch for i in (turn.user_event_id, turn.reply_event_id)]
        found = {row.id: row for row in db.execute(select(Event.id, Event.session_id, Event.role, Event.content)
                                                   .where(Event.id.in_(ids)))}
        for turn in batch:
            user, reply = found.get(turn.user_event_id), found.get(turn.reply_event_id)
            problems = []
            if user is None or user.session_id != turn.session_id or user.role != "user":
                problems.append("user event missing or elsewhere")
            elif user.content != turn.content.encode():
                problems.append("user event's content differs")
            if reply is None or reply.session_id != turn.session_id or reply.role != "assistant":
                problems.append("reply event missing or elsewhere")
            if problems:
                rows.append({"agent_id": turn.agent_id, "session_id": turn.session_id,
                             "user_event_id": turn.user_event_id, "reply_event_id": turn.reply_event_id,
                             "problems": problems})
    return check(rows, lambda row: row, checked=len(turns))


def audit_database(database_url: str, world: World) -> dict:
    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as db:
            agents = select(Agent.id)
            checks = {
                "events_settled": audit_events(db),
                "learned_exactly_once": audit_learned_once(db),
                "memories_of_deleted_agents": check(db.execute(
                    select(Memory.id, Memory.agent_id).where(Memory.agent_id.not_in(agents))).all(),
                    lambda row: {"memory_id": row[0], "agent_id": row[1], "deleted_by_soak": row[1] in world.deleted}),
                "memories_of_forgotten_events": check(db.execute(
                    select(Memory.id, Memory.event_id, Memory.agent_id).join(Event, Event.id == Memory.event_id)
                    .where(Event.forgotten_at.is_not(None))).all(),
                    lambda row: {"memory_id": row[0], "event_id": row[1], "agent_id": row[2]}),
                "orphan_rows": audit_orphans(db),
                "documents_final": check(db.execute(
                    select(Document.id, Document.agent_id, Document.status, Document.bytes_received,
                           Document.bytes_processed).where(Document.status.not_in(FINAL_DOCUMENT_STATUSES))).all(),
                    lambda row: dict(row._mapping)),
                "forget_jobs_finished": check(db.execute(
                    select(ForgetJob.id, ForgetJob.agent_id, ForgetJob.status)
                    .where(ForgetJob.status.in_(ACTIVE_JOB_STATUSES))).all(), lambda row: dict(row._mapping),
                    done=db.scalar(select(func.count()).select_from(ForgetJob).where(ForgetJob.status == "done"))),
                "forget_jobs_succeeded": check(db.execute(
                    select(ForgetJob.id, ForgetJob.agent_id, ForgetJob.failed_reason)
                    .where(ForgetJob.status == "failed")).all(),
                    lambda row: {"job_id": row[0], "agent_id": row[1], "failed_reason": (row[2] or "")[:300]}),
                "deleted_agents_gone": check(db.execute(
                    select(Agent.id).where(Agent.id.in_(sorted(world.deleted)))).all(), lambda row: row[0]),
                "acknowledged_messages_logged": audit_turns(db, world),
            }
    finally:
        engine.dispose()
    return {**checks, "audit_ok": all(value["ok"] for value in checks.values())}
