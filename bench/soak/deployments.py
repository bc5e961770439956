"""What a deployment runs on: its environment, and for postgres a scratch database (created here, dropped after)
and a Redis database (flushed before and after)."""

from __future__ import annotations

import argparse
import contextlib
import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis
from psycopg import sql

from bench.soak.recorder import log


@contextlib.contextmanager
def scratch_database(server_url: str, keep: bool) -> Iterator[str]:
    """A new PostgreSQL database on the server of `server_url` (so the tests' one is untouched), dropped after
    unless `keep` (to look into what the audit found)."""
    name = f"soak_{secrets.token_hex(4)}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))
    try:
        yield url
    finally:
        if keep:
            log(f"kept the database {url}; drop it with DROP DATABASE {name}")
        else:
            with psycopg.connect(server_url, autocommit=True) as admin:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def flush_redis(url: str) -> None:
    client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=10)
    try:
        client.flushdb()
    finally:
        client.close()


def deployment_env(args: argparse.Namespace, workdir: Path) -> dict[str, str]:
    return {"LIFELONG_DATA_DIR": str(workdir / "data"), "LIFELONG_BASE_CHECKPOINT": args.base,
            # Documents of a few KiB become several chunk events, and a turn can never run long.
            "LIFELONG_CHUNK_BYTES": "1024", "LIFELONG_MAX_REPLY_BYTES": "256",
            # Low, so snapshot tasks (the maintenance queue) run during the soak too, and race with deletes.
            "LIFELONG_SNAPSHOT_MIN_TOKENS": str(args.snapshot_min_tokens)}
