"""What searching a memory layer costs at scale: `python -m bench.layer_search --json`.

One memory layer of the default imported model (SmolLM2: 3 key/value heads, each a channel of 64-dim
keys, 3 query heads per channel) over `--tokens` stored tokens, in the store's own RAM view and FAISS
index (`memory.view.MemoryView`, IVF over fp16 codes past 8K keys, the default probes). Keys are
random unit vectors (search time depends on the index's lists and probes, not on what the keys say).
Timed: the searches of a 512-token prompt chunk and of one decoding step, per memory layer (every
channel, one search each, as `MemoryStore.session_reader` runs them) and for the model's 9 memory
layers (x9); medians of `--repeats`. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from memory.index import IndexConfig
from memory.mirror import RowPlace
from memory.view import MemoryView

HEAD_DIM, CHANNELS, GROUP, MEMORY_LAYERS = 64, 3, 3, 9
ROW_TOKENS = 1024


def build(tokens: int, seed: int = 0) -> list[MemoryView]:
    rng = np.random.default_rng(seed)
    views = [MemoryView(HEAD_DIM, IndexConfig(), name=f"channel-{c}") for c in range(CHANNELS)]
    for view in views:
        for row, start in enumerate(range(0, tokens, ROW_TOKENS), start=1):
            count = min(ROW_TOKENS, tokens - start)
            keys = rng.standard_normal((count, HEAD_DIM)).astype(np.float32)
            keys /= np.linalg.norm(keys, axis=1, keepdims=True)
            view.mirror.add_row(row, keys.astype(np.float16), keys.astype(np.float16),
                                RowPlace((1, None), start, start + count, start))
        view.refit()
    return views


def time_search(views: list[MemoryView], steps: int, repeats: int) -> float:
    """Median ms of one memory layer's searches for `steps` tokens (every channel, top 32)."""
    queries = torch.nn.functional.normalize(torch.randn(1, steps, GROUP, HEAD_DIM), dim=-1)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for view in views:
            view.search(queries, 32)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--tokens", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    views = build(args.tokens)
    built_s = time.perf_counter() - started
    chunk = time_search(views, 512, args.repeats)
    step = time_search(views, 1, args.repeats * 10)
    result = {
        "stored_tokens": args.tokens, "channels_per_layer": CHANNELS, "index": views[0].index.kind,
        "lists": views[0].index.lists, "nprobe": views[0].index.nprobe, "build_s": round(built_s, 1),
        "chunk_512_ms_per_layer": round(chunk, 2), "chunk_512_ms_all_layers": round(chunk * MEMORY_LAYERS, 1),
        "decode_step_ms_per_layer": round(step, 3), "decode_step_ms_all_layers": round(step * MEMORY_LAYERS, 2),
    }
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
