"""What a small document costs in SQL: `python -m bench.small_documents --json`.

`--documents` documents of `--bytes` bytes each (made-up facts), each uploaded whole and learned by
`learn_through` (the worker's function) with the default base, in a temporary SQLite database: the database's
growth per document and per stored token, its write-ahead log checkpointed and free pages not counted, and
what the rows hold: memory rows (pairs and text), weight versions (a fixed number kept: they do not grow with
the memory), learner states (sessions and stream checkpoints), and the event log.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
from pathlib import Path

from sqlalchemy import func, select

from bench.local_agent import local_agent
from learner.base import default_base, load_base
from learner.learn import LearnerCache, learn_through
from memory.eventlog import receive_document
from memory.schema import Event, Memory, StreamCheckpoint, StreamSession, WeightVersion


def used_bytes(path: Path) -> int:
    """The SQLite file's pages in use, after its write-ahead log is checkpointed into it."""
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages, free, size = (connection.execute(f"PRAGMA {name}").fetchone()[0]
                             for name in ("page_count", "freelist_count", "page_size"))
    return (pages - free) * size


def fact(number: int, size: int) -> bytes:
    text = (f"Fact {number}: the courier's locker code is {1000 + 37 * number} "
            f"and the parcel goes to pier {number % 9}. ")
    return (text * (size // len(text) + 1)).encode()[:size]


def run(base: str, documents: int, size: int, memory_attention: bool = False) -> dict:
    with tempfile.TemporaryDirectory() as tmp, local_agent(Path(tmp), base, "small") as local:
        cache, start = LearnerCache(local.sessions, memory_attention=memory_attention), used_bytes(local.path)
        for number in range(documents):
            with local.sessions.begin() as db:
                _, ids = receive_document(db, agent_id=local.agent_id, data=fact(number, size), chunk_bytes=2048,
                                          name=f"fact-{number}")
            learn_through(local.sessions, cache, agent_id=local.agent_id, event_id=ids[-1], max_events=64)
        grown = used_bytes(local.path) - start
        with local.sessions() as db:
            tokens = db.scalar(select(func.sum(Memory.num_tokens)))
            held = {name: db.scalar(select(func.coalesce(func.sum(size), 0))) for name, size in (
                ("memory_pairs", func.length(Memory.keys) + func.length(Memory.values)),
                ("memory_text", func.length(Memory.text)),
                ("weight_versions", func.length(WeightVersion.weights)),
                ("learner_states", func.coalesce(func.length(StreamSession.learn_state), 0)
                 + func.coalesce(func.length(StreamSession.state), 0)),
                ("stream_checkpoints", func.length(StreamCheckpoint.learn_state)),
                ("events", func.length(Event.content)))}
            pair_format = sorted(set(db.scalars(select(Memory.pair_format))), key=str)
    return {"base": base, "documents": documents, "bytes_each": size, "stored_tokens": tokens,
            "pair_format": pair_format, "sql_bytes_per_document": grown // documents,
            "sql_bytes_per_token": round(grown / tokens, 1),
            "sql_bytes_per_token_without_versions": round((grown - held["weight_versions"]) / tokens, 1),
            "bytes_per_token": {name: round(value / tokens, 1) for name, value in held.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--base", default=None, help="base model (default: the default base)")
    parser.add_argument("--documents", type=int, default=12)
    parser.add_argument("--bytes", type=int, default=50, help="bytes per document")
    parser.add_argument("--memory-attention", action="store_true",
                        help="memory layers attend: every layer's fp16 pairs are kept (memory.pair_format)")
    args = parser.parse_args(argv)
    if args.documents < 1 or args.bytes < 1:
        parser.error("--documents and --bytes must be at least 1")
    base = args.base or default_base()
    load_base(base)
    print(json.dumps(run(base, args.documents, args.bytes, args.memory_attention), indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
