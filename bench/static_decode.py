"""Decoding through the compiled fixed-shape step against the model's own forward: `python -m bench.static_decode
--json`.

The serving weights of `--base` (`--weights int8`: int8 products, bf16 windows, as `lifelong serve` holds them;
`fp32`: Settings.serving_weights's other choice). After
`--contexts` tokens of held-out text read as a prompt, greedy decoding of `--steps` tokens by the model's
`forward` (eager, what serving did before) and by `models.static_decode.StaticDecoder` (compiled), in turns for
`--rounds` rounds: the median step of each round past its first quarter, the median of the rounds, and their
ratio; whether the two decode the same greedy tokens; the compile time (from a cold or warm compile cache, as
found); and bits per byte of the text after the context read one token at a time by each.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time

import torch

from agent.serving import load_serving_base
from bench.local_text import stdlib_text
from models.cpu import cpu_name
from models.static_decode import StaticDecoder


def greedy(decoder, state, first: int, steps: int) -> tuple[list[int], list[float], list[torch.Tensor]]:
    """`steps` greedy tokens from `state` after reading `first`, each step's seconds, and each step's
    log-probabilities."""
    out = decoder(torch.tensor([[first]]), state, last_only=True)
    tokens, times, log_probs = [], [], []
    for _ in range(steps):
        log_probs.append(out.log_probs[0, -1])
        token = int(out.log_probs[0, -1].argmax())
        tokens.append(token)
        started = time.perf_counter()
        out = decoder(torch.tensor([[token]]), out.state, last_only=True)
        times.append(time.perf_counter() - started)
    return tokens, times, log_probs


def stepped_bits_per_byte(decoder, state, tokens: list[int], tokenizer) -> float:
    """Bits per byte of `tokens[1:]`, each read one step at a time after `tokens[0]`, from `state`."""
    bits, out = 0.0, decoder(torch.tensor([[tokens[0]]]), state, last_only=True)
    for token in tokens[1:]:
        bits -= float(out.log_probs[0, -1, token]) / math.log(2)
        out = decoder(torch.tensor([[token]]), out.state, last_only=True)
    return bits / sum(len(tokenizer.token_bytes(t)) for t in tokens[1:])


@torch.inference_mode()
def measure(model, text_tokens: list[int], context: int, steps: int, rounds: int, bpb_tokens: int) -> dict:
    state = model(torch.tensor([text_tokens[:context]]), None, last_only=True).state
    eager, static = model, StaticDecoder(model)
    per_round: dict[str, list[float]] = {"eager": [], "static": []}
    decoded, log_probs = {}, {}
    for _ in range(rounds):
        for name, decoder in (("eager", eager), ("static", static)):
            decoded[name], times, log_probs[name] = greedy(decoder, state, text_tokens[context], steps)
            per_round[name].append(statistics.median(times[steps // 4 :]))
    tokens_per_s = {name: round(1 / statistics.median(times), 1) for name, times in per_round.items()}
    first_difference = next((i for i, (a, b) in enumerate(zip(decoded["eager"], decoded["static"], strict=True))
                             if a != b), None)
    # Where they part: how far apart the two tokens were in the eager step's distribution (a near tie is rounding).
    margin = None if first_difference is None else round(float(
        log_probs["eager"][first_difference][decoded["eager"][first_difference]]
        - log_probs["eager"][first_difference][decoded["static"][first_difference]]), 4)
    window = text_tokens[context : context + bpb_tokens + 1]
    bpb = {name: round(stepped_bits_per_byte(decoder, state, window, model.tokenizer), 5)
           for name, decoder in (("eager", eager), ("static", static))}
    return {"tokens_per_s": tokens_per_s, "ratio": round(tokens_per_s["static"] / tokens_per_s["eager"], 2),
            "rounds_tokens_per_s": {name: [round(1 / t, 1) for t in times] for name, times in per_round.items()},
            "greedy_tokens_equal": first_difference is None, "first_different_token": first_difference,
            "eager_margin_there_nats": margin,
            "stepped_bpb": bpb, "bpb_change": round(bpb["static"] / bpb["eager"] - 1, 5)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="smollm2-135m-instruct")
    parser.add_argument("--contexts", default="512,2600", help="tokens read before decoding, comma-separated")
    parser.add_argument("--steps", type=int, default=128, help="greedy tokens per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bpb-tokens", type=int, default=256, help="tokens read one step at a time for bits/byte")
    parser.add_argument("--weights", choices=("int8", "fp32"), default="int8", help="serving weights")
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    args = parser.parse_args(argv)
    contexts = [int(c) for c in args.contexts.split(",")]
    if min(contexts) < 1 or args.steps < 4 or min(args.rounds, args.bpb_tokens) < 1:
        parser.error("--contexts, --rounds and --bpb-tokens must be positive, and --steps at least 4")

    model = load_serving_base(args.base, "cpu", args.weights).eval()
    started = time.perf_counter()
    StaticDecoder(model).warm_up()
    compile_s = time.perf_counter() - started
    text_tokens = model.tokenizer.encode(stdlib_text(max(contexts) * 8 + 65536, skip=1 << 20))
    report = {"base": args.base, "weights": args.weights, "cpu": cpu_name(), "torch_threads": torch.get_num_threads(),
              "compile_s": round(compile_s, 1), "steps": args.steps, "rounds": args.rounds,
              "contexts": {str(c): measure(model, text_tokens, c, args.steps, args.rounds, args.bpb_tokens)
                           for c in contexts}}
    print(json.dumps(report) if args.json else json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
