"""Recall across kinds of text: `python -m bench.cross_kind --json`.

A passkey stated in one kind of text (say the dictionary) and asked for after another
(say the Jargon File) is matched more weakly than one stated and asked in the same kind:
a retrieval key carries the few hundred bytes around its token. This measures that gap
on the corpus's *training* split (so a model can be chosen by it without touching the
held-out text the passkey evaluation draws from): per trial, 1 KiB of source A, the
statement, `--distance` bytes ending in source B, the question; then the true digits fed
one step at a time. Per digit it records the probability of the right digit and the
memory's share of the output. Prints one JSON object: per group (same kind, mixed kinds),
the trials whose five digits all come out on top, and the median and 10th percentile of
each trial's weakest digit.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from pathlib import Path

import torch

from learner.corpus import read_documents
from learner.passkey import CHUNK_TOKENS, NATURAL_SOURCES
from learner.synthetic import PASSKEY_QUESTION, passkey_statement
from models import HybridLM, Special
from models.memory import RowMemory
from settings import SHIPPED_CHECKPOINT

LEAD_BYTES = 1024  # text of the statement's kind before it


def source_texts(corpus: Path) -> dict[str, bytes]:
    texts: dict[str, bytearray] = {source: bytearray() for source in NATURAL_SOURCES}
    for document in read_documents(corpus, "train", NATURAL_SOURCES):
        texts[document.source] += document.data
    return {source: bytes(text) for source, text in texts.items() if len(text) > 64 * 1024}


def cut(text: bytes, rng: random.Random, length: int) -> bytes:
    start = rng.randrange(0, len(text) - length)
    return text[start : start + length]


@torch.no_grad()
def digit_odds(model: HybridLM, document: bytes, key: bytes) -> tuple[list[float], list[float]]:
    """Per digit of `key` (fed after `document`): the right digit's probability and the memory's share."""
    tokens = [int(Special.BEGIN), *document]
    memory = RowMemory(1, model.config.head_dim)
    state = model.init_state(1)
    for start in range(0, len(tokens), CHUNK_TOKENS):
        out = model(torch.tensor([tokens[start : start + CHUNK_TOKENS]]), state, memory)
        state = out.state
        memory.add(out.memory_kv.keys, out.memory_kv.values)
    probabilities, shares = [], []
    for digit in key:
        probabilities.append(float(torch.softmax(out.log_probs[0, -1, :256], -1)[digit]))
        shares.append(0.0 if out.pointer is None else float(torch.sigmoid(out.pointer.share_logit[0, -1]).mean()))
        out = model(torch.tensor([[digit]]), out.state, memory)
        memory.add(out.memory_kv.keys, out.memory_kv.values)
    return probabilities, shares


def summary(trials: list[dict]) -> dict:
    weakest = sorted(min(t["p_right"]) for t in trials)
    return {
        "trials": len(trials),
        "all_digits_on_top": sum(t["on_top"] for t in trials),
        "weakest_digit_p_median": round(statistics.median(weakest), 4),
        "weakest_digit_p_p10": round(weakest[len(weakest) // 10], 4),
        "weakest_digit_share_median": round(statistics.median(min(t["share"]) for t in trials), 4),
    }


def run(model: HybridLM, texts: dict[str, bytes], *, trials: int, distance: int, seed: int) -> dict:
    rng = random.Random(f"cross-kind-{seed}")
    sources = sorted(texts)
    results: dict[str, list[dict]] = {"same": [], "mixed": []}
    for i in range(trials):
        stated = rng.choice(sources)
        mixed = i % 3 != 0  # two mixed trials for every same-kind one
        asked = rng.choice([s for s in sources if s != stated]) if mixed else stated
        key = f"{rng.randrange(10_000, 100_000)}".encode()
        document = (cut(texts[stated], rng, LEAD_BYTES) + passkey_statement(key) + cut(texts[asked], rng, distance)
                    + PASSKEY_QUESTION)
        p_right, share = digit_odds(model, document, key)
        on_top = all(p > 0.5 for p in p_right)  # above one half: no other digit can be on top
        results["mixed" if mixed else "same"].append({"stated": stated, "asked": asked, "p_right": p_right,
                                                       "share": share, "on_top": on_top})
    return {group: summary(found) for group, found in results.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cross_kind", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=SHIPPED_CHECKPOINT)
    parser.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--distance", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object (the default output)")
    args = parser.parse_args(argv)
    if args.trials < 3 or args.distance < 1:
        print("--trials must be at least 3 and --distance positive", file=sys.stderr)
        return 2
    texts = source_texts(args.corpus)
    if len(texts) < 2:
        print(f"{args.corpus} has fewer than two natural sources; install dict-gcide, dict-jargon or fortunes and "
              "rebuild it with `lifelong corpus build`", file=sys.stderr)
        return 2
    model = HybridLM.load(args.checkpoint).eval()
    result = run(model, texts, trials=args.trials, distance=args.distance, seed=args.seed)
    print(json.dumps({"checkpoint": str(args.checkpoint), "distance": args.distance, "seed": args.seed, **result}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
