"""Thin tasks: load ids, call the domain function, classify failures.

Transient failures (the database or broker unreachable or busy, another learner committing first)
retry with exponential backoff; anything else is permanent: the events or document are marked
failed with a readable reason, which the API shows, and the task ends.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from pathlib import Path

import kombu.exceptions
import redis.exceptions
from celery import Task, shared_task
from celery.signals import worker_ready
from sqlalchemy import exc as sql_errors

from learner.base import load_base
from learner.eventlog import mark_document_failed, mark_failed, split_document
from learner.learn import LearnConflict, learn_through
from learner.versions import prune_versions as prune
from memory.db import make_engine, make_session_factory
from memory.schema import Agent, Document
from memory.store import MemoryStore
from workers.context import WorkerContext, worker_context
from memory.settings import Settings
from workers.submit import enqueue_document_learning, requeue_pending

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
    except TRANSIENT as exc:
        if task.request.retries < context.settings.task_max_retries:
            countdown = min(60.0, 2.0**task.request.retries) * random.uniform(0.5, 1.0)
            log.warning("%s%s: transient %s; retrying in %.1fs", task.name, task.request.args, _reason(exc), countdown)
            raise task.retry(exc=exc, countdown=countdown) from exc
        reason = f"gave up after {task.request.retries} retries: {_reason(exc)}"
    except Exception as exc:  # noqa: BLE001 - everything else is permanent by definition
        log.exception("%s%s failed permanently", task.name, task.request.args)
        reason = _reason(exc)
    fail(context, reason)
    return {"failed": reason}


@shared_task(bind=True, name="lifelong.learn")
def learn(self: Task, agent_id: int, event_id: int) -> dict:
    """Learn the agent's pending events up to `event_id` (exactly once, in id order)."""

    def work(context: WorkerContext) -> dict:
        settings = context.settings
        report = learn_through(context.sessions, context.learners, agent_id=agent_id, event_id=event_id,
                               chunk_tokens=settings.chunk_bytes, keep_versions=settings.keep_versions,
                               commit_delay_s=settings.learn_commit_delay_s)
        return {"version": report.version, "events": report.events, "tokens": report.tokens}

    def fail(context: WorkerContext, reason: str) -> None:
        with context.sessions.begin() as db:
            mark_failed(db, agent_id=agent_id, through_event_id=event_id, reason=reason)

    return _run(self, work, fail)


@shared_task(bind=True, name="lifelong.ingest")
def ingest(self: Task, document_id: int) -> dict:
    """Split a document into chunk events, then enqueue their learning one chunk at a time."""

    def work(context: WorkerContext) -> dict:
        with context.sessions.begin() as db:
            event_ids = split_document(db, document_id=document_id, chunk_bytes=context.settings.chunk_bytes)
            agent_id = db.get(Document, document_id).agent_id
        enqueue_document_learning(self.app, agent_id=agent_id, event_ids=event_ids)
        return {"chunks": len(event_ids)}

    def fail(context: WorkerContext, reason: str) -> None:
        with context.sessions.begin() as db:
            mark_document_failed(db, document_id=document_id, reason=reason)

    return _run(self, work, fail)


@shared_task(bind=True, name="lifelong.prune_versions")
def prune_versions(self: Task, agent_id: int) -> dict:
    """Delete all but the newest `keep_versions` weight versions, tagged ones aside."""

    def work(context: WorkerContext) -> dict:
        with context.sessions.begin() as db:
            return {"pruned": prune(db, agent_id=agent_id, keep=context.settings.keep_versions)}

    return _run(self, work, lambda context, reason: None)


@shared_task(bind=True, name="lifelong.rebuild_index")
def rebuild_index(self: Task, agent_id: int) -> dict:
    """Rebuild the agent's FAISS index from SQL and save it as a snapshot serving processes can load."""

    def work(context: WorkerContext) -> dict:
        with context.sessions() as db:
            agent = db.get(Agent, agent_id)
            if agent is None:
                raise LookupError(f"agent {agent_id} does not exist")
        head_dim = load_base(agent.base_checkpoint, context.settings.device).config.head_dim
        store = MemoryStore(agent_id=agent_id, sessions=context.sessions, head_dim=head_dim,
                            config=context.settings.store_config)
        store.rebuild()
        store.save_snapshot(context.settings.snapshot_dir(agent_id))
        return {"tokens": len(store)}

    return _run(self, work, lambda context, reason: None)


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
