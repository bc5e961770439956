"""One agent in a temporary SQLite database, served in this process: what the in-process benchmarks start from."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from agent.runtime import AgentRuntime
from memory.db import make_engine, make_session_factory
from memory.migrate import upgrade
from memory.schema import Agent
from settings import Settings
from workers.app import make_app


@dataclass(frozen=True)
class LocalAgent:
    path: Path  # the SQLite file
    sessions: sessionmaker[Session]
    settings: Settings
    agent_id: int

    def runtime(self) -> AgentRuntime:
        """A serving runtime of the agent, as a new API process would load it."""
        with self.sessions() as db:
            return AgentRuntime(agent=db.get(Agent, self.agent_id), sessions=self.sessions,
                                celery=make_app(self.settings), settings=self.settings)


@contextmanager
def local_agent(directory: Path, base: str, name: str = "bench", learning: dict | None = None,
                copy_of: Path | None = None) -> Iterator[LocalAgent]:
    """A new agent on `base` in a new database under `directory`; the engine is disposed after. With `copy_of`
    (a database an earlier run kept), the database is a copy of it and the agent its agent called `name`."""
    path = directory / "bench.db"
    url = f"sqlite:///{path}"
    if copy_of is not None:
        shutil.copy(copy_of, path)
    upgrade(url)
    engine = make_engine(url)
    try:
        sessions = make_session_factory(engine)
        with sessions.begin() as db:
            agent = db.scalar(select(Agent).where(Agent.name == name)) if copy_of is not None else None
            if agent is None:
                agent = Agent(name=name, base_checkpoint=base, learning_settings=learning or {})
                db.add(agent)
                db.flush()
            agent_id = agent.id
        yield LocalAgent(path, sessions, Settings(data_dir=directory / "data", database_url=url), agent_id)
    finally:
        engine.dispose()
