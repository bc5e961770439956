"""What memory costs a decoded token: `python -m bench.decode --json`.

The shipped checkpoint reads unseen code (the standard library's tests) into an agent's retrieval
memory as a serving process holds it (the store's FAISS index and fp16 pairs in RAM, no SQL on
the path), then decodes greedily from there, with the memory and without it, rounds in turn so
that both sides see the same machine. Prints one JSON object: the median per-token time of each
round, the median of the rounds for each side, and their ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from bench.learn import RamMemory
from bench.local_text import stdlib_text
from learner.base import load_base
from models import HybridLM, MemoryReader, ModelOutput, Special
from settings import SHIPPED_CHECKPOINT

CHUNK = 512


def read_into_memory(model: HybridLM, data: bytes, memory: RamMemory) -> ModelOutput:
    """Read `data` chunk by chunk, storing each chunk's pairs; the last chunk's output."""
    tokens, state = [int(Special.BEGIN), *data], model.init_state(1)
    for start in range(0, len(tokens), CHUNK):
        out = model(torch.tensor([tokens[start : start + CHUNK]]), state, memory)
        state = out.state
        memory.add(*out.memory_kv)
    return out


def ms_per_token(model: HybridLM, start: ModelOutput, memory: MemoryReader | None, tokens: int) -> float:
    """Median time of one greedy decoding step, from `start`."""
    out, times = start, []
    for _ in range(tokens):
        token = torch.tensor([[int(out.log_probs[0, -1, :256].argmax())]])
        began = time.perf_counter()
        out = model(token, out.state, memory)
        times.append(time.perf_counter() - began)
    return statistics.median(times) * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(SHIPPED_CHECKPOINT))
    parser.add_argument("--memory-bytes", type=int, default=16384, help="bytes read into memory before decoding")
    parser.add_argument("--tokens", type=int, default=150, help="tokens decoded per round")
    parser.add_argument("--rounds", type=int, default=8, help="rounds per side, in turn")
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    args = parser.parse_args(argv)
    if min(args.memory_bytes, args.tokens, args.rounds) < 1:
        parser.error("--memory-bytes, --tokens and --rounds must be at least 1")

    model = load_base(args.checkpoint)
    memory = RamMemory(model.config.head_dim)
    rounds: dict[str, list[float]] = {"with_memory": [], "without_memory": []}
    with torch.inference_mode():
        start = read_into_memory(model, stdlib_text(args.memory_bytes, skip=4 << 20, tests=True), memory)
        sides = (("with_memory", memory), ("without_memory", None))
        for round_number in range(args.rounds):
            for name, reader in sides if round_number % 2 == 0 else sides[::-1]:
                rounds[name].append(ms_per_token(model, start, reader, args.tokens))
    medians = {name: statistics.median(times) for name, times in rounds.items()}
    result = {
        "checkpoint": args.checkpoint, "memory_bytes": args.memory_bytes, "stored_pairs": len(memory.store),
        "tokens_per_round": args.tokens, "torch_threads": torch.get_num_threads(),
        "ms_per_token": {name: round(value, 3) for name, value in medians.items()},
        "rounds_ms_per_token": {name: [round(t, 3) for t in times] for name, times in rounds.items()},
        "memory_cost_ratio": round(medians["with_memory"] / medians["without_memory"], 3),
    }
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
