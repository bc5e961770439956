"""Retrieval memory at scale: `python -m bench.memory --json`.

Builds an agent's memory from the shipped `small` model's retrieval keys over
real text (Python's own sources) in an SQLite file, then measures writes (SQL +
index), a chunk's search (one query per token, top-32) and the following of
what it found at 10K, 100K and 1M stored tokens, with the search's recall@32
against exact search, for each probe count
asked for (`--nprobe`), a full rebuild from SQL, and the bytes SQL spends per
stored token. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import torch

from bench.local_text import stdlib_text
from memory.db import make_engine, make_session_factory
from memory.migrate import upgrade
from memory.schema import Agent
from memory.store import MemoryStore, Span
from models import HybridLM, ModelConfig, RetrievedMemory
from models.memory import empty_retrieval, nothing_follows
from settings import SHIPPED_CHECKPOINT

SPAN = 512
TOP_K = 32
PROBE_CHUNKS = 4  # recall of one 512-byte chunk is a small sample; average several


class QueryRecorder:
    """A MemoryReader that stores the retrieval block's queries and returns nothing."""

    def __init__(self) -> None:
        self.queries: list[torch.Tensor] = []

    def search(self, queries: torch.Tensor, top_k: int) -> RetrievedMemory:
        self.queries.append(queries.detach().clone())
        return empty_retrieval(queries, top_k)

    def follow(self, ids: torch.Tensor) -> RetrievedMemory:
        return nothing_follows(ids, self.queries[-1].shape[-1])


@torch.inference_mode()
def model_pairs(model: HybridLM, text: bytes, streams: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Retrieval keys and values of `text`, read as `streams` parallel streams in SPAN-byte chunks."""
    per_stream = len(text) // streams // SPAN * SPAN
    tokens = torch.tensor(list(text[: per_stream * streams])).view(streams, per_stream)
    state, keys, values = model.init_state(streams), [], []
    for start in range(0, per_stream, SPAN):
        out = model(tokens[:, start : start + SPAN], state)
        state = out.state
        keys.append(out.memory_kv.keys)
        values.append(out.memory_kv.values)
    # (streams, chunks*SPAN, D), stream-major so each SPAN of a stream stays one span
    k = torch.cat(keys, dim=1).reshape(-1, model.config.head_dim)
    v = torch.cat(values, dim=1).reshape(-1, model.config.head_dim)
    return k.numpy().astype(np.float16), v.numpy().astype(np.float16)


@torch.inference_mode()
def chunk_queries(model: HybridLM, text: bytes) -> np.ndarray:
    """The (queries, D) the retrieval block issues for one chunk of unseen text."""
    recorder = QueryRecorder()
    model(torch.tensor([list(text[:SPAN])]), None, recorder)
    return recorder.queries[0].reshape(-1, model.config.head_dim).float().numpy()


def measure_search(
    store: MemoryStore, probes: list[np.ndarray], repeats: int
) -> tuple[list[float], list[float], np.ndarray]:
    """Seconds of each chunk's full search (index, pairs as tensors), of following what it found
    (twice, as the retrieval block does), and the ids found for all probes. The store catches up once
    first, as a request or a learning batch does; a chunk's search reads RAM only."""
    store.catch_up()
    searches, follows = [], []
    for chunk in probes:
        tensor = torch.from_numpy(chunk).view(1, SPAN, -1, chunk.shape[1])
        for _ in range(repeats):
            start = time.perf_counter()
            found = store.search(tensor, TOP_K)
            searches.append(time.perf_counter() - start)
            start = time.perf_counter()
            store.follow(store.follow(found.ids[:, :, 0]).ids)
            follows.append(time.perf_counter() - start)
    return searches, follows, store.search_ids(np.concatenate(probes), TOP_K).ids


def search_figures(
    store: MemoryStore, probes: list[np.ndarray], exact_ids: np.ndarray, repeats: int
) -> dict[str, float]:
    """Median ms of a chunk's search and recall@k of all probes against exact search, as the index stands."""
    searches, follows, found = measure_search(store, probes, repeats)
    positions = _positions(store, found, SPAN)
    return {
        "search_ms_per_chunk": round(1000 * statistics.median(searches), 2),
        "follow_ms_per_chunk": round(1000 * statistics.median(follows), 2),
        "recall_at_32": round(recall_at_k(positions, exact_ids), 4),
        # The pointer's weight goes mostly to the best match: how often the true nearest key came back.
        "nearest_found": round(float(np.mean([e[0] in f for f, e in zip(positions, exact_ids)])), 4),
    }


def recall_at_k(found_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    k = exact_ids.shape[1]
    return float(np.mean([len(set(f[f >= 0].tolist()) & set(e.tolist())) / k for f, e in zip(found_ids, exact_ids)]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    parser.add_argument("--sizes", default="10000,100000,1000000", help="stored-token counts to measure at")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=SHIPPED_CHECKPOINT,
        help="model whose keys are stored; 'untrained' for seeded initial weights",
    )
    parser.add_argument(
        "--nprobe",
        default="",
        help="comma-separated probe counts to measure IVF search at (default: the configured one)",
    )
    args = parser.parse_args(argv)
    # Whole spans only, so stored rows and the exact reference hold the same keys.
    sizes = [-(-int(s) // SPAN) * SPAN for s in args.sizes.split(",")]
    nprobes = [int(n) for n in args.nprobe.split(",") if n]

    torch.manual_seed(0)
    if str(args.checkpoint) == "untrained":
        model, model_name = HybridLM(ModelConfig.preset("small")).eval(), "small (untrained weights)"
    else:
        model, model_name = HybridLM.load(args.checkpoint).eval(), str(args.checkpoint)
    started = time.perf_counter()
    keys, values = model_pairs(model, stdlib_text(sizes[-1] + 8 * SPAN))
    encode_s = time.perf_counter() - started
    held_out = stdlib_text(PROBE_CHUNKS * SPAN, skip=sizes[-1] + 16 * SPAN)
    probes = [chunk_queries(model, held_out[i * SPAN : (i + 1) * SPAN]) for i in range(PROBE_CHUNKS)]
    probe = np.concatenate(probes)
    result: dict[str, object] = {
        "model": model_name,
        "head_dim": model.config.head_dim,
        "queries_per_chunk": int(probes[0].shape[0]),
        "probe_chunks": PROBE_CHUNKS,
        "top_k": TOP_K,
        "encode_s": round(encode_s, 1),
    }

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        upgrade(url)
        engine = make_engine(url)
        sessions = make_session_factory(engine)
        with sessions.begin() as db:
            agent = Agent(name="bench", base_checkpoint="preset:small")
            db.add(agent)
            db.flush()
            agent_id = agent.id
        store = MemoryStore(agent_id=agent_id, sessions=sessions, head_dim=model.config.head_dim)

        stored, add_seconds, per_size = 0, 0.0, {}
        for size in sizes:
            spans = [
                Span(
                    keys=keys[i : i + SPAN],
                    values=values[i : i + SPAN],
                    text=b"x" * SPAN,
                    byte_start=i,
                    byte_end=i + SPAN,
                )
                for i in range(stored, size, SPAN)
            ]
            start = time.perf_counter()
            for batch in range(0, len(spans), 16):
                store.add_spans(spans[batch : batch + 16])
            add_seconds += time.perf_counter() - start
            stored = size
            exact = faiss.IndexFlatIP(keys.shape[1])
            exact.add(keys[:size].astype(np.float32))
            _, exact_ids = exact.search(probe, TOP_K)
            configured = store.view.index.nprobe
            per_size[str(size)] = {
                "index": store.view.index.kind,
                "nprobe": configured,
                **search_figures(store, probes, exact_ids, args.repeats),
            }
            if store.view.index.kind == "ivf" and nprobes:
                per_size[str(size)]["by_nprobe"] = {}
                for lists in nprobes:
                    store.view.index.nprobe = lists
                    per_size[str(size)]["by_nprobe"][str(lists)] = search_figures(
                        store, probes, exact_ids, args.repeats
                    )
                store.view.index.nprobe = configured
        result["add_keys_per_s"] = round(stored / add_seconds)
        result["by_size"] = per_size

        start = time.perf_counter()
        store.rebuild()
        result["rebuild_s"] = round(time.perf_counter() - start, 2)
        result["rebuilt_tokens"] = len(store)
        # After a rebuild the IVF centroids are trained on everything stored, not on an earlier part.
        result["after_rebuild"] = {
            "index": store.view.index.kind,
            "nprobe": store.view.index.nprobe,
            **search_figures(store, probes, exact_ids, args.repeats),
        }
        with engine.connect() as connection:
            page_size = connection.exec_driver_sql("PRAGMA page_size").scalar()
            pages = connection.exec_driver_sql("PRAGMA page_count").scalar()
        raw = 2 * 2 * model.config.head_dim  # fp16 key + value per token
        result["bytes_per_stored_token"] = round(page_size * pages / stored, 1)
        result["raw_fp16_pair_bytes"] = raw
        result["storage_ratio"] = round(page_size * pages / stored / raw, 3)
        engine.dispose()

    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


def _positions(store: MemoryStore, token_ids: np.ndarray, span: int) -> np.ndarray:
    """Token ids -> positions in the original key array (rows hold consecutive spans, in id order)."""
    rows = store.view.mirror.row_ids
    row_index = np.searchsorted(rows, token_ids >> 10)
    positions = np.minimum(row_index, len(rows) - 1) * span + (token_ids & 1023)
    return np.where(token_ids >= 0, positions, -1)


if __name__ == "__main__":
    sys.exit(main())
