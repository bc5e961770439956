"""One deployment from start to audit: start it, create the first agents, run the clients and the chaos for
`--duration-s`, drain, stop every process, audit the database and gather the report's part for it."""

from __future__ import annotations

import argparse
import contextlib
import random
import secrets
import threading
import time
from pathlib import Path

from bench.deployment import Deployment
from bench.soak.audit import audit_database
from bench.soak.chaos import EmbeddedWorkers, SeparateWorkers, chaos_loop
from bench.soak.deployments import deployment_env, flush_redis, scratch_database
from bench.soak.drain import drain
from bench.soak.http_calls import HTTP_TIMEOUT, ClientContext, admin_http
from bench.soak.operations import client_loop, create_agent
from bench.soak.recorder import Recorder, log
from bench.soak.server_logs import log_errors
from bench.soak.world import INITIAL_AGENTS, World
from memory.db import make_engine, make_session_factory

# Past the load's end, calls in flight may still retry this long before the clients are abandoned.
GRACE_S = 60.0
PROGRESS_EVERY_S = 15.0


def start_clients(deployment: Deployment, args: argparse.Namespace, kind: str, world: World, rec: Recorder,
                  stop: threading.Event, load_deadline: float) -> list[threading.Thread]:
    threads = []
    for index in range(args.clients):
        ctx = ClientContext(index=index, http=admin_http(deployment),
                            rng=random.Random(f"{args.seed}-{kind}-{index}"), world=world, rec=rec, url=deployment.url,
                            key=deployment.admin_key, base=args.base, max_tokens=args.max_tokens,
                            hard_deadline=load_deadline + GRACE_S)
        # Daemons: a client stuck past every deadline must not keep the process alive after the report.
        threads.append(threading.Thread(target=client_loop, args=(ctx, stop, load_deadline), daemon=True,
                                        name=f"client-{index}"))
    for thread in threads:
        thread.start()
    return threads


def run_load(deployment: Deployment, workers: EmbeddedWorkers | SeparateWorkers, args: argparse.Namespace, kind: str,
             world: World, rec: Recorder) -> None:
    """The clients and the chaos thread, for `--duration-s`; returns once they stopped (or were abandoned)."""
    stop = threading.Event()
    started = time.monotonic()
    load_deadline = started + args.duration_s
    chaos = threading.Thread(target=chaos_loop, daemon=True, name="chaos", args=(deployment, workers, rec, stop),
                             kwargs={"load_deadline": load_deadline, "kill_every_s": args.kill_every_s,
                                     "restart_at": started + args.duration_s / 2,
                                     "rng": random.Random(f"{args.seed}-{kind}-chaos")})
    threads = [chaos, *start_clients(deployment, args, kind, world, rec, stop, load_deadline)]
    chaos.start()
    try:
        next_progress = started + PROGRESS_EVERY_S
        abandon_at = load_deadline + GRACE_S + HTTP_TIMEOUT.read + 30  # past every call's own bound
        while any(thread.is_alive() for thread in threads) and time.monotonic() < abandon_at:
            time.sleep(0.5)
            if time.monotonic() >= next_progress:
                next_progress += PROGRESS_EVERY_S
                log(f"{kind}: {rec.progress()} agents={world.live_count()}")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=5)
    stuck = [thread.name for thread in threads if thread.is_alive()]
    if stuck:
        rec.chaos_event("threads abandoned", names=stuck)


def soak(kind: str, args: argparse.Namespace, workdir: Path) -> dict:
    """One deployment: start it, load it under chaos, drain, stop it, audit its database."""
    workdir.mkdir(parents=True)
    rec, world = Recorder(), World()
    with contextlib.ExitStack() as cleanup:
        env = deployment_env(args, workdir)
        if kind == "postgres":
            database_url = cleanup.enter_context(scratch_database(args.postgres_url, args.keep_database))
            flush_redis(args.redis_url)
            cleanup.callback(flush_redis, args.redis_url)
            env |= {"LIFELONG_DATABASE_URL": database_url, "LIFELONG_BROKER_URL": args.redis_url,
                    "LIFELONG_ADMIN_KEY": f"ll_soak-{secrets.token_hex(8)}"}
        else:
            database_url = f"sqlite:///{workdir / 'data' / 'lifelong.db'}"
        deployment = Deployment(kind, env, logs=workdir)
        cleanup.callback(deployment.shutdown)  # also on Ctrl-C: every process group it started, SIGKILLed
        log(f"{kind}: starting in {workdir}")
        deployment.start()
        workers = (EmbeddedWorkers(deployment, rec) if kind == "embedded"
                   else SeparateWorkers(deployment, rec, count=args.workers))
        with admin_http(deployment) as http:
            setup = ClientContext(index=-1, http=http, rng=random.Random(args.seed), world=world, rec=rec,
                                  url=deployment.url, key=deployment.admin_key, base=args.base,
                                  max_tokens=args.max_tokens, hard_deadline=time.monotonic() + 120)
            for _ in range(INITIAL_AGENTS):
                create_agent(setup)
        log(f"{kind}: {args.clients} clients for {args.duration_s:.0f} s")
        run_load(deployment, workers, args, kind, world, rec)
        workers.ensure_running()
        log(f"{kind}: load over ({rec.progress()}); draining")
        engine = make_engine(database_url)
        try:
            drained = drain(deployment, make_session_factory(engine), args.drain_timeout_s)
        finally:
            engine.dispose()
        log(f"{kind}: drain {drained['ended']} after {drained['seconds']} s; stopping and auditing")
        deployment.shutdown()
        audit = audit_database(database_url, world)
        return {"deployment": kind, "kill": workers.description, "logs": str(workdir), "database": database_url,
                **rec.summary(), "world": world.summary(), "drain": drained, "audit": audit,
                "audit_ok": audit["audit_ok"], "server_log_errors": log_errors(workdir)}
