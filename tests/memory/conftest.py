import threading

import pytest

from memory.index import VectorIndex
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


@pytest.fixture
def held_refit(monkeypatch):
    """(building, release): background refits signal `building`, then wait for `release` before fitting."""
    building, release = threading.Event(), threading.Event()
    fit = VectorIndex.rebuild

    def held_until_released(index, ids, vectors, seed=0, **options):
        if threading.current_thread().name.startswith("refit-"):
            building.set()
            assert release.wait(30)
        fit(index, ids, vectors, seed, **options)

    monkeypatch.setattr(VectorIndex, "rebuild", held_until_released)
    yield building, release
    release.set()
