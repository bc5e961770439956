"""Real worker processes (`lifelong worker`) against a real broker, and cleanup of every one started."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from memory.migrate import upgrade
from settings import Settings
from tests.dbs import postgres_or_skip, redis_or_skip
from tests.topology import PYTHONPATH
from workers.app import make_app

ROOT = Path(__file__).resolve().parents[2]
# Generous: a worker imports torch and Celery; a wait ending here is a failure, not a timing assertion.
WAIT_S = 120.0


@dataclass
class Deployment:
    """A database and a broker for workers, with the settings a worker and a sender share."""

    name: str
    env: dict[str, str]
    settings: Settings

    def app(self):
        return make_app(self.settings)


@pytest.fixture(params=["embedded", "redis"])
def deployment(request, tmp_path) -> Deployment:
    """embedded: SQLite + the SQL transport on a file beside it. redis: PostgreSQL + Redis (scale-out)."""
    env = {"LIFELONG_DATA_DIR": str(tmp_path / "data"), "LIFELONG_CHUNK_BYTES": "64",
           "LIFELONG_BROKER_VISIBILITY_TIMEOUT_S": "3"}
    if request.param == "redis":
        env["LIFELONG_DATABASE_URL"] = postgres_or_skip()
        env["LIFELONG_BROKER_URL"] = redis_or_skip()
    settings = Settings(**{key.removeprefix("LIFELONG_").lower(): value for key, value in env.items()})
    settings.data_dir.mkdir(parents=True)
    upgrade(settings.resolved_database_url)
    return Deployment(request.param, env, settings)


@pytest.fixture
def start_worker() -> Callable[..., subprocess.Popen]:
    """Start `lifelong worker` processes in their own process groups; all are killed at teardown."""
    started: list[subprocess.Popen] = []

    def start(deployment: Deployment, *, concurrency: int = 1, **extra_env: str) -> subprocess.Popen:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIFELONG_")}
        env.update(deployment.env, **extra_env, PYTHONPATH=PYTHONPATH)
        # The worker writes it for as long as it lives.
        log = open(Path(deployment.env["LIFELONG_DATA_DIR"]).parent / f"worker-{len(started)}.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "worker", f"--concurrency={concurrency}", "--loglevel=INFO",
             f"--hostname=test{len(started)}@%h"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        started.append(process)
        return process

    yield start
    for process in started:
        _kill_group(process, signal.SIGKILL)


def _kill_group(process: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
    process.wait(timeout=30)


def children(pid: int) -> list[int]:
    """The pool processes of a worker (Linux /proc)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def wait_for(condition: Callable[[], object], what: str, process: subprocess.Popen | None = None):
    """Poll until `condition()` is truthy; fail (with the reason) past WAIT_S or if the worker exits."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            pytest.fail(f"worker exited with {process.returncode} while waiting for {what}")
        time.sleep(0.2)
    pytest.fail(f"timed out after {WAIT_S}s waiting for {what}")
