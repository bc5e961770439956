"""compose.yaml's migrate and worker services, run natively against PostgreSQL and Redis (tests/topology.py)."""

from __future__ import annotations

import sys

from sqlalchemy import text

from memory.db import make_engine
from tests.dbs import postgres_or_skip, redis_or_skip
from tests.topology import Topology, load_compose, service_spec


def test_service_env_is_composes_with_the_local_servers(tmp_path):
    spec = service_spec(load_compose(), "learn-worker", database_url="postgresql://db", broker_url="redis://b/1",
                        data_dir=tmp_path)
    assert spec.argv == [sys.executable, "-m", "agent.cli", "worker", "--queues", "learn",
                         "--hostname", "learn@%h"]
    assert spec.env["LIFELONG_DATABASE_URL"] == "postgresql://db" and spec.env["LIFELONG_DATA_DIR"] == str(tmp_path)
    assert spec.env["LIFELONG_ADMIN_KEY"]  # from .env.example, as `cp .env.example .env` gives
    gpu = service_spec(load_compose(), "learn-worker-gpu", database_url="d", broker_url="b", data_dir=tmp_path)
    assert gpu.env["LIFELONG_DEVICE"] == "cuda"


def test_migrate_then_workers_start_as_compose_runs_them(tmp_path):
    topology = Topology(database_url=postgres_or_skip(), broker_url=redis_or_skip(), workdir=tmp_path)
    with topology:
        topology.run("migrate")
        engine = make_engine(topology.database_url)
        try:
            with engine.connect() as connection:
                assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
        finally:
            engine.dispose()

        topology.start("learn-worker")
        topology.start("maintenance-worker")
        learn = topology.wait_for_worker("learn-worker")
        maintenance = topology.wait_for_worker("maintenance-worker")
        assert [queue["name"] for queue in learn] == ["learn"]
        assert [queue["name"] for queue in maintenance] == ["maintenance"]
