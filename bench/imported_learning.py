"""How an imported model learns as it reads: `python -m bench.imported_learning --json`.

The default imported model (or `--base`) reads a held-out stream (Python's standard library, text
it is unlikely to have trained on) chunk by chunk with the worker's own `OnlineLearner`, scoring each
chunk before learning from it (prequential bits per byte), in four arms:
- static: no memory, nothing learned;
- retrieval: the memory layers attend to the top-k pairs of the stream's own past beyond their window
  (`LIFELONG_MEMORY_ATTENTION=true`, exact in-process pairs: models.layer_memory.StreamPairs);
- learning: the default step size (learner.base.IMPORTED_LEARNING_RATE) on what learns
  (learner.online: norm scales above the memory layers);
- both.
Then the step-size sweep the default was chosen from, each with forgetting: held-out bits per byte
after / before on three sources (the GPL-3, another part of the standard library, the MPL-2.0); and
the same sweep with low-rank adapters (models.adapters) on every projection above the memory layers
learning instead of the norm scales.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import torch

from bench.local_text import stdlib_text
from learner.base import IMPORTED_LEARNING_RATE, default_base, load_base
from learner.evaluate import bits_per_byte
from learner.online import Chunk, LearningConfig, OnlineLearner, stream_chunks
from models.layer_memory import StreamPairs
from models.transformer import TransformerLM

LICENCES = Path("/usr/share/common-licenses")
CHUNK_TOKENS = 512


def read_stream(base: TransformerLM, tokens: torch.Tensor, *, learning_rate: float,
                memory: bool, lora_rank: int = 0) -> tuple[float, TransformerLM]:
    """(bits over the stream, the model after it) for one arm; with `lora_rank`, adapters of that rank on
    the layers above the memory layers learn instead of the norm scales."""
    model = copy.deepcopy(base)
    config = LearningConfig(learning_rate=learning_rate)
    if lora_rank:
        config = LearningConfig(learning_rate=learning_rate, trainable="adapters", adapter_rank=lora_rank)
    learner = OnlineLearner(model, config)
    pairs = StreamPairs() if memory else None
    state, bits = model.init_state(1), 0.0
    for inputs, targets in stream_chunks(tokens, CHUNK_TOKENS):
        position = state.position
        step = learner.step(Chunk(inputs, targets, state), pairs)
        if pairs is not None:
            pairs.add(step.memory_kv, position)
        state = step.state
        bits += step.loss * step.tokens / math.log(2)
    return bits, model.eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--base", default=None, help="an imported base (default: the default base)")
    parser.add_argument("--bytes", type=int, default=32 * 1024, help="length of the learned stream")
    parser.add_argument("--heldout-bytes", type=int, default=6000, help="held-out bytes per source")
    parser.add_argument("--rates", default="3e-4,1e-3,2e-3,1e-2", help="step sizes of the sweep")
    parser.add_argument("--lora-ranks", default="8", help="adapter ranks measured instead of the norms ('' for none)")
    parser.add_argument("--lora-rates", default="1e-4,3e-4,1e-3", help="step sizes of the adapters' sweep")
    args = parser.parse_args(argv)
    spec = args.base or default_base()
    base = load_base(spec)
    if not base.capabilities.pretrained:
        raise SystemExit(f"{spec} is not an imported model")
    started = time.perf_counter()
    data = stdlib_text(args.bytes, skip=200_000)
    tokens = torch.tensor([base.tokenizer.encode(data)])
    heldout = {"gpl-3": (LICENCES / "GPL-3").read_bytes()[: args.heldout_bytes],
               "stdlib": stdlib_text(args.heldout_bytes, skip=2_000_000),
               "mpl-2.0": (LICENCES / "MPL-2.0").read_bytes()[: args.heldout_bytes]}
    before = {source: bits_per_byte(base, text) for source, text in heldout.items()}
    arms = {}
    for arm, rate, memory in (("static", 0.0, False), ("retrieval", 0.0, True),
                              ("learning", IMPORTED_LEARNING_RATE, False), ("both", IMPORTED_LEARNING_RATE, True)):
        bits, _ = read_stream(base, tokens, learning_rate=rate, memory=memory)
        arms[arm] = round(bits / len(data), 4)
    sweep = []
    ranks = [int(r) for r in args.lora_ranks.split(",") if r]
    runs = [(0, float(r)) for r in args.rates.split(",")] + [(rank, float(r)) for rank in ranks
                                                               for r in args.lora_rates.split(",")]
    for rank, rate in runs:
        bits, learned = read_stream(base, tokens, learning_rate=rate, memory=False, lora_rank=rank)
        learned_entries = sum(p.numel() for p in learned.parameters() if p.requires_grad)
        sweep.append({"learns": f"lora rank {rank}" if rank else "norms", "learned_entries": learned_entries,
                      "learning_rate": rate, "prequential_bpb": round(bits / len(data), 4),
                      "forgetting": {source: round(bits_per_byte(learned, text) / before[source], 4)
                                     for source, text in heldout.items()}})
    report = {"base": spec, "memory_layers": list(base.config.memory_layers), "stream_bytes": len(data),
              "stream_tokens": tokens.shape[1], "chunk_tokens": CHUNK_TOKENS,
              "learned_tensors": len(OnlineLearner(copy.deepcopy(base), LearningConfig()).params),
              "prequential_bpb": arms, "heldout_bpb_before": {k: round(v, 4) for k, v in before.items()},
              "sweep": sweep, "seconds": round(time.perf_counter() - started, 1)}
    print(json.dumps(report) if args.json else json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
