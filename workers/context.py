"""Per-process resources of a worker: the database engine and the cache of agents' models.

Built lazily in the process that runs tasks (after the prefork pool forks), never inherited
across a fork: a forked engine would share its parent's database connections.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from learner.learn import LearnerCache
from memory.db import make_engine, make_session_factory
from memory.store import StoreConfig
from settings import Settings


@dataclass
class WorkerContext:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    learners: LearnerCache


_contexts: dict[tuple[int, str], WorkerContext] = {}


def worker_context(settings: Settings) -> WorkerContext:
    key = (os.getpid(), settings.resolved_database_url)
    context = _contexts.get(key)
    if context is None:
        engine = make_engine(settings.resolved_database_url)
        sessions = make_session_factory(engine)
        learners = LearnerCache(sessions, device=settings.device,
                                store_config=StoreConfig.serving(settings.memory_nprobe),
                                memory_attention=settings.memory_attention,
                                serving_int8=settings.serving_weights == "int8",
                                compiled_decode=settings.compiled_decode)
        context = WorkerContext(settings, engine, sessions, learners)
        _contexts[key] = context
    return context
