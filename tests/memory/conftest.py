import pytest

from memory.db import make_engine, make_session_factory
from memory.migrate import upgrade
from memory.schema import Agent
from tests.dbs import empty_db_url  # noqa: F401 - re-exported fixture


@pytest.fixture
def db_url(empty_db_url) -> str:  # noqa: F811
    upgrade(empty_db_url)
    return empty_db_url


@pytest.fixture
def sessions(db_url):
    engine = make_engine(db_url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def make_agent(sessions):
    def create(name: str) -> int:
        with sessions.begin() as db:
            agent = Agent(name=name, base_checkpoint="preset:tiny")
            db.add(agent)
            db.flush()
            return agent.id

    return create
