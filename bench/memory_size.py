"""What a memory costs, in SQL and in RAM, and how fast a serving process opens it:
`python -m bench.memory_size --json`.

For the default base (or `--base`), `--bytes` of Python source are read into one agent's memory in a temporary
SQLite database, as turns and learning leave it (`bench.service.build_history`: the model reads the text once,
its memory layers' pairs stored in the format the service keeps, memory.pair_format), once with memory
attention off (the default: the lowest memory layers' int8 keys) and once on (every memory layer's fp16 keys
and values, the format every imported agent kept before). For each: the database's growth per stored token
(its write-ahead log checkpointed, free pages not counted; the session's saved state, at most its working
context's key/value windows, is among it), the pairs' bytes per token, the store's RAM per
token (`MemoryStore.nbytes`: pairs and index), and the seconds a serving process takes to open the store from
SQL alone and from a snapshot (written by the maintenance task's code).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import func, select

from bench.local_text import stdlib_text
from bench.service import build_history
from bench.small_documents import used_bytes
from learner.base import default_base, load_base
from memory.db import make_engine, make_session_factory
from memory.eventlog import create_session
from memory.migrate import upgrade
from memory.pair_format import format_for
from memory.schema import Agent, Memory, StreamSession
from memory.store import MemoryStore, StoreConfig


def measure(base: str, data: bytes, memory_attention: bool, directory: Path) -> dict:
    path = directory / ("attending.db" if memory_attention else "searching.db")
    url = f"sqlite:///{path}"
    upgrade(url)
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    with sessions.begin() as db:
        agent = Agent(name="memory", base_checkpoint=base, learning_settings={})
        db.add(agent)
        db.flush()
        agent_id, session_id = agent.id, create_session(db, agent_id=agent.id).id
    before = used_bytes(path)
    started = time.perf_counter()
    build_history(url, agent_id=agent_id, session_id=session_id, base=base, data=data,
                  memory_attention=memory_attention)
    read_s = time.perf_counter() - started
    grown = used_bytes(path) - before
    with sessions() as db:
        tokens = db.scalar(select(func.sum(Memory.num_tokens)))
        pair_bytes = db.scalar(select(func.sum(func.length(Memory.keys) + func.length(Memory.values))))
        state_bytes = db.scalar(select(func.length(StreamSession.state)).where(StreamSession.id == session_id))
    config = load_base(base).config
    pair_format = format_for(config, attends=memory_attention)

    def open_store(snapshot: Path | None) -> tuple[MemoryStore, float]:
        started = time.perf_counter()
        store = MemoryStore.open(agent_id=agent_id, sessions=sessions, head_dim=config.head_dim,
                                 channels=config.memory_channels, search_openings=config.memory_searches_openings,
                                 snapshot=snapshot, config=StoreConfig.serving(), pair_format=pair_format)
        store.wait_for_refit()
        return store, time.perf_counter() - started

    store, from_sql_s = open_store(None)
    ram = store.nbytes
    store.save_snapshot(directory / "snapshot")
    del store
    _, from_snapshot_s = open_store(directory / "snapshot")
    engine.dispose()
    return {"pair_format": pair_format.name, "stored_tokens": tokens, "read_s": round(read_s, 1),
            "sql_bytes_per_token": round(grown / tokens, 1), "pair_bytes_per_token": round(pair_bytes / tokens, 1),
            "session_state_bytes": state_bytes,
            "ram_bytes_per_token": round(ram / tokens, 1), "open_from_sql_s": round(from_sql_s, 2),
            "open_from_snapshot_s": round(from_snapshot_s, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--base", default=None, help="base model (default: the default base)")
    parser.add_argument("--bytes", type=int, default=1 << 20, help="bytes of text in memory")
    parser.add_argument("--formats", default="searching,attending",
                        help="which to measure: searching (memory attention off, the default), attending")
    args = parser.parse_args(argv)
    formats = args.formats.split(",")
    if args.bytes < 4096 or not formats or set(formats) - {"searching", "attending"}:
        parser.error("--bytes must be at least 4096; --formats names searching and/or attending")
    base = args.base or default_base()
    data = stdlib_text(args.bytes)
    result: dict = {"base": base, "bytes": args.bytes}
    for name in formats:
        with tempfile.TemporaryDirectory() as tmp:
            result[name] = measure(base, data, name == "attending", Path(tmp))
        print(json.dumps({name: result[name]}), file=sys.stderr)
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
