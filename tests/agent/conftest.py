"""A served deployment per module: embedded (SQLite, SQL transport, worker inside `serve`) and scale-out
(PostgreSQL + Redis, a separate `lifelong worker`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent.server import Deployment
from tests.dbs import postgres_or_skip, redis_or_skip
from tests.topology import PYTHONPATH

# Small limits, so the bad-input tests can cross them cheaply.
MAX_MESSAGE_BYTES = 4096
MAX_DOCUMENT_BYTES = 200_000


@pytest.fixture(scope="module", params=["embedded", "redis"])
def deployment(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"serve-{request.param}")
    env = {"LIFELONG_DATA_DIR": str(root / "data"), "LIFELONG_BASE_CHECKPOINT": "preset:tiny",
           "LIFELONG_MAX_MESSAGE_BYTES": str(MAX_MESSAGE_BYTES), "LIFELONG_MAX_DOCUMENT_BYTES": str(MAX_DOCUMENT_BYTES),
           "LIFELONG_CHUNK_BYTES": "1024",
           # Every reply is short, whatever budget a request (or the fuzzer) asks for.
           "LIFELONG_MAX_REPLY_BYTES": "256"}
    yield from served(request.param, root, env)


def served(kind: str, root: Path, env: dict[str, str]) -> Iterator[Deployment]:
    """A fixture's deployment of `kind` ("embedded", or "redis": PostgreSQL + Redis, a separate worker) with
    `env`, started, yielded, and shut down after."""
    if kind == "redis":
        env = {**env, "LIFELONG_DATABASE_URL": postgres_or_skip(), "LIFELONG_BROKER_URL": redis_or_skip(),
               "LIFELONG_ADMIN_KEY": "ll_test-admin-key-of-the-scale-out-deployment"}
    deployment = Deployment(kind, {**env, "PYTHONPATH": PYTHONPATH}, logs=root)  # with the tests' pauses
    try:
        deployment.start()
        yield deployment
    finally:
        deployment.shutdown()
