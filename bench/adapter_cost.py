"""What serving a learned version's adapters costs: `python -m bench.adapter_cost --json`.

An imported model as a serving process holds it (int8 products, prompt copies), with and without the
adapters an agent learns (models.adapters: rank 8 on every projection above the memory layers), rounds in
turn so both sides see the same machine. The adapters' B is set to random values (a fresh adapter's zeros
would cost the same arithmetic, but this way the outputs must differ too). Prints one JSON object: each
side's median 512-token prefill and decode speed over the rounds, and their ratios.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys

import torch

from bench.local_text import stdlib_text
from bench.talk import speed
from learner.base import load_base
from models.adapters import adapter_tensors, attach_adapters
from models.catalog import DEFAULT_MODEL
from models.quantize import int8_kernel_available, quantize_weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=DEFAULT_MODEL, help="an imported base (catalog name or path)")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5, help="rounds per side, in turn")
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    args = parser.parse_args()
    if not int8_kernel_available():
        sys.exit("this PyTorch build has no int8 weight-only kernel: nothing to compare")
    torch.manual_seed(0)
    learning = load_base(args.base)
    learning.add_adapters(args.rank)
    with torch.no_grad():
        for name, tensor in adapter_tensors(learning).items():
            if name.endswith(".b"):
                tensor.normal_(0, 1e-2)
    served = quantize_weights(load_base(args.base)).eval()  # as agent.serving.load_serving_base holds it
    adapted = copy.deepcopy(served)
    attach_adapters(adapted, adapter_tensors(learning))  # as agent.serving.ServingModel adds a version's
    text = stdlib_text(8192)
    rounds: dict[str, list[dict]] = {"plain": [], "adapters": []}
    for _ in range(args.rounds):
        for side, model in (("plain", served), ("adapters", adapted)):
            rounds[side].append(speed(model, text, repeats=2, decode_steps=48))
    sides = {side: {key: statistics.median(r[key] for r in runs) for key in ("prefill_512_tokens_per_s",
                                                                            "decode_tokens_per_s")}
             for side, runs in rounds.items()}
    result = {"base": args.base, "rank": args.rank, "rounds": args.rounds, "threads": torch.get_num_threads(),
              "adapted_layers": len({name.split(".")[1] for name in adapter_tensors(learning)}),
              "plain": sides["plain"], "adapters": sides["adapters"],
              **{f"{what}_ratio": round(sides["adapters"][key] / sides["plain"][key], 3)
                 for what, key in (("decode", "decode_tokens_per_s"), ("prefill", "prefill_512_tokens_per_s"))}}
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
