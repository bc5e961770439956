"""What one API process holds for its lifetime: settings, database, broker client, agent runtimes."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from celery import Celery
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from agent.metrics import Metrics
from agent.runtime import Runtimes
from learner.base import default_base, load_base
from memory.db import make_engine, make_session_factory
from settings import Settings
from workers.app import make_app

log = logging.getLogger(__name__)

# Chat turns computing at once; more wait their turn (the model's threads already use every core).
TURN_THREADS = 8


@dataclass
class Services:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    celery: Celery
    runtimes: Runtimes
    metrics: Metrics
    turns: ThreadPoolExecutor
    model_loaded: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def start(cls, settings: Settings) -> Services:
        engine = make_engine(settings.resolved_database_url)
        sessions = make_session_factory(engine)
        celery = make_app(settings)
        services = cls(settings=settings, engine=engine, sessions=sessions, celery=celery,
                       runtimes=Runtimes(settings=settings, sessions=sessions, celery=celery),
                       metrics=Metrics(sessions), turns=ThreadPoolExecutor(TURN_THREADS, thread_name_prefix="turn"))
        threading.Thread(target=services._load_default_model, name="load-model", daemon=True).start()
        return services

    @property
    def default_base(self) -> str:
        return self.settings.base_checkpoint or default_base()

    def _load_default_model(self) -> None:
        """Readiness: the default base model loads (and is then cached for the agents that use it)."""
        try:
            load_base(self.default_base, self.settings.device)
        except Exception:  # /readyz reports it; agents with other bases still work
            log.exception("the default base model %s does not load", self.default_base)
            return
        self.model_loaded.set()

    def close(self) -> None:
        self.turns.shutdown(wait=True)
        self.engine.dispose()
