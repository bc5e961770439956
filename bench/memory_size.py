"""What a memory costs, in SQL and in RAM, how fast a serving process opens it, and how well its index finds:
`python -m bench.memory_size --json`.

For the default base (or `--base`), `--bytes` of Python source are read into one agent's memory in an SQLite
database (temporary, or `--database`, kept and reused by later runs), as turns and learning leave it
(`bench.service.build_history`: the model reads the text once, its memory layers' pairs stored in the format the
service keeps, memory.pair_format), once with memory attention off (the default: the lowest memory layers' int8
keys) and once on (every memory layer's fp16 keys and values, the format every imported agent kept before). For
each: the database's growth per stored token (its write-ahead log checkpointed, free pages not counted; the
session's saved state, at most its working context's key/value windows, is among it), the pairs' bytes per
token, the store's RAM per token (`MemoryStore.nbytes`: pairs and index; and the process's resident growth
while it opened), the seconds a serving process takes to open the store from SQL alone (until it serves, and
until its index is fitted, which a keys-only store does in the background) and from a snapshot (written by the
maintenance task's code), and the search's recall@32 against exact search over the same keys for
the model's own queries (its memory layers reading the next 4 KB of text), with the milliseconds a search of a
32-token question's queries takes.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
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
from memory.view import flat_queries
from models import RetrievedMemory
from models.memory import empty_retrieval


def measure(base: str, data: bytes, memory_attention: bool, directory: Path, database: Path | None) -> dict:
    path = database or directory / ("attending.db" if memory_attention else "searching.db")
    url = f"sqlite:///{path}"
    built = not path.exists()
    if built:
        upgrade(url)
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    read_s = grown = None
    if built:
        with sessions.begin() as db:
            agent = Agent(name="memory", base_checkpoint=base, learning_settings={})
            db.add(agent)
            db.flush()
            agent_id, session_id = agent.id, create_session(db, agent_id=agent.id).id
        before = used_bytes(path)
        started = time.perf_counter()
        build_history(url, agent_id=agent_id, session_id=session_id, base=base, data=data,
                      memory_attention=memory_attention)
        read_s, grown = time.perf_counter() - started, used_bytes(path) - before
    with sessions() as db:
        agent_id, session_id = db.execute(select(StreamSession.agent_id, StreamSession.id)).first()
        tokens = db.scalar(select(func.sum(Memory.num_tokens)))
        pair_bytes = db.scalar(select(func.sum(func.length(Memory.keys) + func.length(Memory.values))))
        state_bytes = db.scalar(select(func.length(StreamSession.state)).where(StreamSession.id == session_id))
    model = load_base(base)
    config = model.config
    pair_format = format_for(config, attends=memory_attention)

    def open_store(snapshot: Path | None) -> tuple[MemoryStore, float, float]:
        """The store as a serving process opens it, the seconds until it serves, and until its index is fitted."""
        started = time.perf_counter()
        store = MemoryStore.open(agent_id=agent_id, sessions=sessions, head_dim=config.head_dim,
                                 channels=config.memory_channels, search_openings=config.memory_searches_openings,
                                 snapshot=snapshot, config=StoreConfig.serving(), pair_format=pair_format)
        serving = time.perf_counter() - started
        store.wait_for_refit()
        return store, serving, time.perf_counter() - started

    gc.collect()
    resident = resident_bytes()
    store, from_sql_s, fitted_s = open_store(None)
    resident = resident_bytes() - resident
    ram = store.nbytes
    found = search_figures(store, model, stdlib_text(len(data) + 4096)[len(data):])
    store.save_snapshot(directory / "snapshot")
    del store
    _, from_snapshot_s, _ = open_store(directory / "snapshot")
    engine.dispose()
    return {"pair_format": pair_format.name, "stored_tokens": tokens, "read_s": read_s and round(read_s, 1),
            "sql_bytes_per_token": grown and round(grown / tokens, 1),
            "pair_bytes_per_token": round(pair_bytes / tokens, 1), "session_state_bytes": state_bytes,
            "ram_bytes_per_token": round(ram / tokens, 1),
            "resident_growth_bytes_per_token": round(resident / tokens, 1),
            "open_from_sql_s": round(from_sql_s, 2), "fitted_from_sql_s": round(fitted_s, 2),
            "open_from_snapshot_s": round(from_snapshot_s, 2), **found}


def resident_bytes() -> int:
    """This process's resident memory now (Linux)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class QueryRecorder:
    """A LayerMemoryReader that keeps each channel's queries and finds nothing (models.layer_memory)."""

    def __init__(self) -> None:
        self.queries: dict[int, list[np.ndarray]] = {}

    def search_channel(self, channel: int, queries: torch.Tensor, top_k: int, *,
                       stream_range: tuple[int, int]) -> tuple[RetrievedMemory, None]:
        self.queries.setdefault(channel, []).append(flat_queries(queries))
        return empty_retrieval(queries, top_k), None


def search_figures(store: MemoryStore, model, text: bytes, top_k: int = 32, question_tokens: int = 32) -> dict:
    """The store's search against exact search over its live keys, for the queries `model`'s memory layers make
    reading `text`: recall@top_k averaged over the channels the store keeps, and the milliseconds (median over
    the channels' searches) of one question's queries."""
    recorder = QueryRecorder()
    tokens = model.tokenizer.encode(text.decode("utf-8", errors="replace"))[:1024]
    with torch.inference_mode():
        model(torch.tensor([tokens]), model.init_state(1), recorder)
    recalls, times = [], []
    for channel, view in store.view_of.items():
        queries = np.concatenate(recorder.queries[channel])
        ids, keys = view.mirror.live_searchable()
        exact = ids[np.argpartition(-(queries @ keys.astype(np.float32).T), top_k, axis=1)[:, :top_k]]  # any order
        found = view.search_ids(queries, top_k).ids
        recalls += [len(np.intersect1d(a, b)) / top_k for a, b in zip(found, exact)]
        group = queries.shape[0] // len(tokens)  # query heads per channel
        question = queries[: question_tokens * group]
        started = time.perf_counter()
        view.search_ids(question, top_k)
        times.append(time.perf_counter() - started)
    return {"search_recall_at_32": round(float(np.mean(recalls)), 4),
            "question_search_ms": round(1000 * statistics.median(times), 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--base", default=None, help="base model (default: the default base)")
    parser.add_argument("--bytes", type=int, default=1 << 20, help="bytes of text in memory")
    parser.add_argument("--database", type=Path, default=None,
                        help="an SQLite file to build the memory in and keep (one format), or to reuse if it exists")
    parser.add_argument("--formats", default="searching,attending",
                        help="which to measure: searching (memory attention off, the default), attending")
    args = parser.parse_args(argv)
    formats = args.formats.split(",")
    if args.bytes < 4096 or not formats or set(formats) - {"searching", "attending"}:
        parser.error("--bytes must be at least 4096; --formats names searching and/or attending")
    if args.database is not None and len(formats) != 1:
        parser.error("--database holds one memory: name one format")
    base = args.base or default_base()
    data = stdlib_text(args.bytes)
    result: dict = {"base": base, "bytes": args.bytes}
    for name in formats:
        with tempfile.TemporaryDirectory() as tmp:
            result[name] = measure(base, data, name == "attending", Path(tmp), args.database)
        print(json.dumps({name: result[name]}), file=sys.stderr)
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
