import pytest

from memory.schema import Agent
from tests.dbs import db_url, empty_db_url, sessions  # noqa: F401 - re-exported fixtures


@pytest.fixture
def make_agent(sessions):
    def create(name: str) -> int:
        with sessions.begin() as db:
            agent = Agent(name=name, base_checkpoint="preset:tiny")
            db.add(agent)
            db.flush()
            return agent.id

    return create
