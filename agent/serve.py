"""`lifelong serve`: the API in this process and, on the embedded defaults, a learning worker beside it."""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from pathlib import Path

import uvicorn

from agent.app import create_app
from agent.auth import ensure_admin_key
from agent.limits import READ_HEADER_BYTES
from learner.base import default_base
from memory.db import make_engine, make_session_factory
from memory.migrate import upgrade
from settings import Settings

log = logging.getLogger(__name__)


def _embedded_worker(parent_pid: int) -> None:
    """The worker child: configured from the same LIFELONG_* environment; exits when its parent is gone."""
    from workers.app import run_worker

    def watch_parent() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(0)  # orphaned (the server was killed): no one would stop this worker otherwise

    threading.Thread(target=watch_parent, daemon=True).start()
    # Solo: tasks run in this process. A prefork pool process SIGKILLed between taking a task from the SQL
    # transport and starting it left the parent waiting on it forever, taking nothing else (seen in bench.soak);
    # here a kill takes the whole worker, EmbeddedWorker starts a new one, and its start-up requeue resends
    # what SQL shows pending.
    run_worker(Settings(), hostname=f"embedded-{parent_pid}@%h", pool="solo")


class EmbeddedWorker:
    """The learning worker beside `serve`, kept running: one that dies (exits other than cleanly) is started
    again, after a pause that doubles while it keeps dying (up to RESTART_PAUSE_MAX_S) and resets once one has
    lived RESTART_PAUSE_MAX_S."""

    RESTART_PAUSE_MAX_S = 30.0

    def __init__(self) -> None:
        self.process: multiprocessing.Process | None = None
        self._stopping = threading.Event()
        self._supervisor = threading.Thread(target=self._supervise, name="lifelong-worker-supervisor", daemon=True)

    def start(self) -> EmbeddedWorker:
        self.process = self._spawn()
        self._supervisor.start()
        return self

    def _spawn(self) -> multiprocessing.Process:
        # spawn, not fork: the parent has imported torch, whose threads do not survive a fork.
        process = multiprocessing.get_context("spawn").Process(target=_embedded_worker, args=(os.getpid(),),
                                                               name="lifelong-worker")
        process.start()
        return process

    def _supervise(self) -> None:
        pause = 1.0
        while not self._stopping.is_set():
            assert self.process is not None
            started = time.monotonic()
            self.process.join()
            if self._stopping.is_set() or self.process.exitcode == 0:
                return  # stopped, or told to stop (a SIGTERM to the process group reaches the worker first)
            lived = time.monotonic() - started
            pause = 1.0 if lived >= self.RESTART_PAUSE_MAX_S else min(pause * 2, self.RESTART_PAUSE_MAX_S)
            log.warning("the learning worker (pid %s) exited with %s after %.0f s; starting a new one in %.0f s",
                        self.process.pid, self.process.exitcode, lived, pause)
            if self._stopping.wait(pause):
                return
            self.process = self._spawn()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Celery's warm shutdown: the task in progress finishes (or, past the timeout, is sent again by the
        next start's requeue)."""
        self._stopping.set()
        if self.process is None:
            return
        self.process.terminate()
        self.process.join(timeout=timeout_s)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


def chat_hint(*, host: str, port: int, key_file: Path | None) -> str:
    """What to type in another terminal to talk to this server (printed at start, for people)."""
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # a wildcard is not an address to call
    key = f"$(cat {key_file})" if key_file is not None else "$LIFELONG_ADMIN_KEY"
    return "\n".join([
        "chat from another terminal:",
        f"  export LIFELONG_URL=http://{shown_host}:{port} LIFELONG_API_KEY={key}",
        "  lifelong agents create ada        # prints the new agent's id",
        "  lifelong chat --agent ID          # Ctrl-D ends; resume with --session ID",
    ])


def serve(settings: Settings, *, host: str, port: int, migrate: bool = True, worker: bool | None = None,
          log_level: str = "info") -> None:
    """Run until stopped. `worker` defaults to settings.embedded: then no external service is needed."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if migrate:
        upgrade(settings.resolved_database_url)
    engine = make_engine(settings.resolved_database_url)
    try:
        key_file = ensure_admin_key(settings, make_session_factory(engine))
    finally:
        engine.dispose()
    if key_file is not None:
        print(f"admin key: {key_file} (readable by you only; send it as 'Authorization: Bearer <key>')", flush=True)
    print(chat_hint(host=host, port=port, key_file=key_file), flush=True)
    base = settings.base_checkpoint or default_base()
    print(f"new agents read with {base} (LIFELONG_BASE_CHECKPOINT; `lifelong models list` shows the others)",
          flush=True)
    child = EmbeddedWorker().start() if (settings.embedded if worker is None else worker) else None
    try:
        uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level,
                    h11_max_incomplete_event_size=READ_HEADER_BYTES)
    finally:
        if child is not None:
            child.stop()
