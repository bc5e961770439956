"""The Celery app, configured from the one Settings object.

Queues: `learn` (online learning, documents' chunk events included; order per agent is kept by the
database, see learner.learn) and `maintenance` (memory index snapshots for fast restarts). Tasks are
long and idempotent, so they are acknowledged late, one prefetched at a time,
and requeued when the process running them dies.

`celery -A workers.app worker` (or `lifelong worker`) uses the module-level `app`, configured from
`LIFELONG_*` environment variables and built on first use: importing this module builds nothing and
creates no directory.
"""

from __future__ import annotations

import os

from celery import Celery
from kombu import Queue

from settings import Settings

QUEUES = ("learn", "maintenance")
SQL_PREFIXES = ("sqla+", "sqlalchemy+")


def make_app(settings: Settings) -> Celery:
    broker_url, transport = settings.resolved_broker_url, None
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if broker_url.startswith(SQL_PREFIXES):
        # The same SQL transport, polling faster (see workers.transport); it takes the bare database URL.
        broker_url, transport = broker_url.split("+", 1)[1], "workers.transport:Transport"
    app = Celery("lifelong", broker=broker_url, set_as_current=False)
    if transport is not None:
        # kombu passes these to create_engine: wait for SQLite's lock rather than fail at once.
        transport_options = {"connect_args": {"timeout": 30}} if broker_url.startswith("sqlite") else {}
    else:
        # Redis: an unacknowledged task (its worker died) is delivered again after this long.
        transport_options = {"visibility_timeout": settings.broker_visibility_timeout_s}
    app.conf.update(
        task_queues=[Queue(name) for name in QUEUES],
        task_default_queue="learn",
        task_routes={
            "lifelong.learn": {"queue": "learn"},
            "lifelong.forget": {"queue": "learn"},
            "lifelong.snapshot_memory": {"queue": "maintenance"},
            "lifelong.reencode_memory": {"queue": "maintenance"},
        },
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,  # progress lives in SQL (events, documents), not in a result backend
        task_serializer="json",
        accept_content=["json"],
        broker_transport_options=transport_options,
        broker_transport=transport,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    app.conf.lifelong_settings = settings
    # The tasks are shared tasks: importing them registers them with every app, this one included.
    import workers.tasks  # noqa: F401

    return app


_app: Celery | None = None


def __getattr__(name: str) -> Celery:
    """The module-level `app` (what `celery -A workers.app` looks up), built when first asked for."""
    global _app
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _app is None:
        _app = make_app(Settings())
    return _app


def run_worker(
    settings: Settings,
    *,
    queues: tuple[str, ...] = QUEUES,
    concurrency: int | None = None,
    loglevel: str = "INFO",
    hostname: str | None = None,
    pool: str = "prefork",
) -> None:
    """Run a worker in this process until it is stopped (what `lifelong worker` does).

    The prefork pool runs each task in a child process: if a child dies mid-task, the parent sees it
    and the task goes back to the queue (reject on worker loss) for a fresh child. The worker runs at
    `settings.worker_nice`, below a serving process on the same cores. `pool="solo"` runs tasks in this process
    instead (the embedded worker, whose parent restarts it whole).
    """
    unknown = sorted(set(queues) - set(QUEUES))
    if unknown:
        raise ValueError(f"unknown queues {unknown}; choose from {list(QUEUES)}")
    argv = [
        "worker",
        f"--queues={','.join(queues)}",
        f"--pool={pool}",
        f"--concurrency={1 if pool == 'solo' else concurrency or settings.worker_concurrency}",
        "--prefetch-multiplier=1",
        f"--loglevel={loglevel}",
        "--without-gossip",
        "--without-mingle",
    ]
    if hostname:
        argv.append(f"--hostname={hostname}")
    # Before the pool forks: its processes inherit it. Never lowered (that would need privileges).
    os.setpriority(os.PRIO_PROCESS, 0, max(os.getpriority(os.PRIO_PROCESS, 0), settings.worker_nice))
    make_app(settings).worker_main(argv)
