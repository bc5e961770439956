"""Thin tasks: load ids, call the domain function, classify failures.

Transient failures (the database or broker unreachable or busy, another learner committing first)
retry with exponential backoff; anything else is permanent: the events or document are marked
failed with a readable reason, which the API shows, and the task ends.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

import kombu.exceptions
import redis.exceptions
from celery import Task, shared_task
from celery.signals import worker_ready
from sqlalchemy import exc as sql_errors

from learner.base import base_config
from learner.learn import LearnConflict, learn_through
from learner.replay import fail_forget_jobs, run_forget_jobs
from memory.admin import stored_tokens
from memory.db import AgentGone, make_engine, make_session_factory
from memory.eventlog import mark_failed
from memory.pair_format import format_for
from memory.reencode import reencode_rows
from memory.schema import Agent
from memory.store import MemoryStore, StoreConfig
from settings import Settings
from workers.context import WorkerContext, worker_context
from workers.submit import enqueue_snapshot, requeue_pending

log = logging.getLogger(__name__)

TRANSIENT = (
    sql_errors.OperationalError,
    sql_errors.InterfaceError,
    sql_errors.DisconnectionError,
    kombu.exceptions.OperationalError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    LearnConflict,
)


def _context(task: Task) -> WorkerContext:
    return worker_context(task.app.conf.lifelong_settings)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _run(task: Task, work: Callable[[WorkerContext], dict], fail: Callable[[WorkerContext, str], None]) -> dict:
    context = _context(task)
    try:
        return work(context)
    except AgentGone as exc:  # deleted with work still queued: nothing to do, nothing to mark
        log.info("%s%s: %s; skipped", task.name, task.request.args, exc)
        return {"skipped": str(exc)}
    except TRANSIENT as exc:
        if task.request.retries < context.settings.task_max_retries:
            countdown = min(60.0, 2.0**task.request.retries) * random.uniform(0.5, 1.0)
            log.warning("%s%s: transient %s; retrying in %.1fs", task.name, task.request.args, _reason(exc), countdown)
            raise task.retry(exc=exc, countdown=countdown) from exc
        reason = f"gave up after {task.request.retries} retries: {_reason(exc)}"
    except Exception as exc:  # everything else is permanent by definition
        log.exception("%s%s failed permanently", task.name, task.request.args)
        reason = _reason(exc)
    try:
        fail(context, reason)
    except AgentGone as exc:  # deleted meanwhile: nothing left to mark
        return {"skipped": str(exc)}
    return {"failed": reason}


@shared_task(bind=True, name="lifelong.learn")
def learn(self: Task, agent_id: int, event_id: int) -> dict:
    """Learn the agent's pending events up to `event_id` (exactly once, in id order)."""

    def work(context: WorkerContext) -> dict:
        settings = context.settings
        report = learn_through(context.sessions, context.learners, agent_id=agent_id, event_id=event_id,
                               chunk_tokens=settings.chunk_bytes, keep_versions=settings.keep_versions,
                               keep_version_every=settings.keep_version_every)
        if report.tokens:
            with context.sessions() as db:
                stored = stored_tokens(db, agent_id=agent_id)
            if snapshot_due(stored - report.tokens, stored, min_tokens=settings.snapshot_min_tokens):
                enqueue_snapshot(self.app, agent_id=agent_id)
        return {"version": report.version, "events": report.events, "tokens": report.tokens}

    def fail(context: WorkerContext, reason: str) -> None:
        with context.sessions.begin() as db:
            mark_failed(db, agent_id=agent_id, through_event_id=event_id, reason=reason)

    return _run(self, work, fail)


@shared_task(bind=True, name="lifelong.forget")
def forget(self: Task, agent_id: int) -> dict:
    """Run the agent's forget jobs (learner.replay), then enqueue the learning that waited for them."""

    def work(context: WorkerContext) -> dict:
        settings = context.settings
        reports = run_forget_jobs(context.sessions, context.learners, agent_id=agent_id,
                                  chunk_tokens=settings.chunk_bytes, checkpoint_every_s=settings.forget_checkpoint_s)
        requeue_pending(self.app, context.sessions, agent_id=agent_id)
        return {"jobs": [report.job_id for report in reports], "events": sum(report.events for report in reports)}

    def fail(context: WorkerContext, reason: str) -> None:
        # The weights stay as they were (the job says why); the agent's learning goes on.
        with context.sessions.begin() as db:
            fail_forget_jobs(db, agent_id=agent_id, reason=reason)
        requeue_pending(self.app, context.sessions, agent_id=agent_id)

    return _run(self, work, fail)


@shared_task(bind=True, name="lifelong.snapshot_memory")
def snapshot_memory(self: Task, agent_id: int) -> dict:
    """Rebuild the agent's FAISS index from SQL and save it as the snapshot a serving process starts
    from (`AgentRuntime` opens it, then catches up from SQL past it), instead of reading every row."""

    def work(context: WorkerContext) -> dict:
        store = _store(context, agent_id)
        store.rebuild()
        store.save_snapshot(context.settings.snapshot_dir(agent_id))
        return {"tokens": len(store)}

    return _run(self, work, lambda context, reason: None)


@shared_task(bind=True, name="lifelong.reencode_memory")
def reencode_memory(self: Task, agent_id: int) -> dict:
    """Rewrite the agent's memory rows of an older pair format in the one its stores keep now
    (memory.reencode): an imported model's fp16 pairs become its lowest memory layers' int8 keys."""

    def work(context: WorkerContext) -> dict:
        store = _store(context, agent_id)
        return {"rows": reencode_rows(store)}

    return _run(self, work, lambda context, reason: None)


def _store(context: WorkerContext, agent_id: int) -> MemoryStore:
    """The agent's store as the service's processes open it (not caught up)."""
    with context.sessions() as db:
        agent = db.get(Agent, agent_id)
        if agent is None:
            raise AgentGone(f"agent {agent_id} does not exist")
    config = base_config(agent.base_checkpoint, context.settings.device)
    return MemoryStore(agent_id=agent_id, sessions=context.sessions, head_dim=config.head_dim,
                       channels=config.memory_channels, search_openings=config.memory_searches_openings,
                       config=StoreConfig.serving(context.settings.memory_nprobe),
                       pair_format=format_for(config, attends=context.settings.memory_attention))


def snapshot_due(tokens_before: int, tokens_after: int, *, min_tokens: int) -> bool:
    """Whether a snapshot should be written now: the memory reached `min_tokens` or doubled again
    (crossed a power of two at or past it). Snapshots then cost O(1) amortised per stored token,
    and a restart never reads more than half its memory from SQL."""
    if tokens_after < min_tokens:
        return False
    return tokens_before < min_tokens or tokens_before.bit_length() < tokens_after.bit_length()


@worker_ready.connect
def _requeue_on_start(sender, **_) -> None:
    """Re-enqueue what SQL shows pending: covers messages lost with a killed worker or a crashed sender."""
    settings: Settings = sender.app.conf.lifelong_settings
    engine = make_engine(settings.resolved_database_url)
    try:
        requeue_pending(sender.app, make_session_factory(engine))
    except TRANSIENT as exc:
        log.warning("could not re-enqueue pending work at start (%s); it stays pending in SQL", _reason(exc))
    finally:
        engine.dispose()
