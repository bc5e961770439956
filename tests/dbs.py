"""Database fixtures shared by every test package: a fresh SQLite file or a fresh PostgreSQL schema."""

from __future__ import annotations

import os
import time

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

POSTGRES_URL = os.environ.get("LIFELONG_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
# Tests flush this Redis database: point it at one nobody else uses (e.g. .../5 on a shared machine).
REDIS_URL = os.environ.get("LIFELONG_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() == "true"


def _unreachable(server: str, url: str, variable: str, exc: Exception) -> None:
    """A server the tests need is absent: fail under CI=true (it must be there), skip locally."""
    if IN_CI:
        pytest.fail(f"{server} must be reachable at {url} under CI=true: {exc}")
    pytest.skip(f"no {server} at {url} ({type(exc).__name__}); set {variable} or start it")


def postgres_or_skip() -> str:
    """The PostgreSQL URL with an empty public schema; skips locally (fails in CI) when the server is absent."""
    engine = create_engine("postgresql+psycopg://" + POSTGRES_URL.removeprefix("postgresql://"))
    try:
        with engine.begin() as connection:
            connection.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            connection.execute(text("CREATE SCHEMA public"))
    except Exception as exc:  # any connection failure means "no server"
        _unreachable("PostgreSQL", POSTGRES_URL, "LIFELONG_TEST_POSTGRES_URL", exc)
    finally:
        engine.dispose()
    return POSTGRES_URL


def redis_or_skip() -> str:
    """The Redis URL with its database flushed; skips locally (fails in CI) when the server is absent."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.flushdb()
    except redis.RedisError as exc:
        _unreachable("Redis", REDIS_URL, "LIFELONG_TEST_REDIS_URL", exc)
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db_url(request, tmp_path) -> str:
    """A database URL with nothing in it, on each supported backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'lifelong.db'}"
    return postgres_or_skip()


@pytest.fixture
def db_url(empty_db_url) -> str:
    """An empty database migrated to the newest schema, on each supported backend."""
    from memory.migrate import upgrade

    upgrade(empty_db_url)
    return empty_db_url


@pytest.fixture
def sessions(db_url):
    """A session factory on `db_url`; its engine is disposed after the test."""
    from memory.db import make_engine, make_session_factory

    engine = make_engine(db_url)
    yield make_session_factory(engine)
    engine.dispose()


def another_backend_waits_for_a_lock(sessions, timeout_s: float) -> bool:
    """Whether, within `timeout_s`, some other PostgreSQL backend is seen blocked on a lock."""
    deadline = time.monotonic() + timeout_s
    while True:
        # A transaction of its own per look: PostgreSQL keeps one snapshot of pg_stat_activity per
        # transaction, so looking again in the same one would never see a backend start waiting.
        with sessions() as db:
            if db.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                              "AND pid <> pg_backend_pid()")):
                return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def held_by_a_writer(engine, agent_id: int) -> bool:
    """Whether another transaction holds the agent's lock (PostgreSQL) or the database's write lock (SQLite)."""
    with engine.connect() as connection:
        try:
            if engine.dialect.name == "postgresql":
                connection.execute(text("SELECT id FROM agents WHERE id = :id FOR UPDATE NOWAIT"), {"id": agent_id})
            else:
                connection.exec_driver_sql("PRAGMA busy_timeout = 0")
                connection.exec_driver_sql("BEGIN IMMEDIATE")
        except OperationalError:
            return True
        finally:
            connection.rollback()
    return False
