"""One passkey trial replayed, to see what the memory search returns: `python -m bench.passkey_probe --json`.

Rebuilds trial `--trial` of `lifelong eval passkey` at `--distance` (same seed, so the
same key and filler) in a real memory store, then answers the question once per probe
count (`--nprobe`; 0 probes every list: exact search). The document is read once, as the
evaluation reads it (searching at the store's default probe count: the stream state
carries what the last token recalled); the question's chunk and the answers are then
read under each probe count. For each answer step under exact search
it reports the statement's own pair (the key of the byte before the digit, naming the
digit): its cosine to the question's key, its rank among all stored keys, the best other
cosine, and the memory's share of the output; then what that match depends on (the
recurrent state, or the text around statement and question). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

from learner.passkey import CHUNK_TOKENS, TrialMemory, filler_pool, greedy_answer, store_chunk
from learner.synthetic import PASSKEY_STATEMENT, passkey_trial
from memory.store import MemoryStore
from models import HybridLM, RetrievedMemory, Special, State
from models.memory import empty_retrieval, nothing_follows
from settings import SHIPPED_CHECKPOINT


class RecordingReader:
    """A memory that searches `store` (or finds nothing, without one) and keeps, per forward, the last
    position's query and memory share."""

    def __init__(self, store: MemoryStore | None = None) -> None:
        self.store = store
        self.queries: list[torch.Tensor] = []
        self.shares: list[float] = []  # appended by the retrieval block's forward hook

    def search(self, queries: torch.Tensor, top_k: int) -> RetrievedMemory:
        self.queries.append(queries.detach()[0, -1, 0].float())
        return empty_retrieval(queries, top_k) if self.store is None else self.store.search(queries, top_k)

    def follow(self, ids: torch.Tensor) -> RetrievedMemory:
        return nothing_follows(ids, self.queries[-1].shape[-1]) if self.store is None else self.store.follow(ids)


def record_share(module: torch.nn.Module, inputs: tuple, output: tuple) -> None:
    """Forward hook on the retrieval block: its memory's share of the output at the last position."""
    memory, pointer = inputs[2].memory, output.pointer
    if isinstance(memory, RecordingReader) and pointer is not None:
        memory.shares.append(float(torch.sigmoid(pointer.share_logit[0, -1]).mean()))


@torch.no_grad()
def probe_trial(model: HybridLM, document: bytes, key: bytes, store: MemoryStore, nprobes: list[int]) -> dict:
    """Read `document` into `store`, then answer once per probe count; see the module docstring."""
    tokens = [int(Special.BEGIN), *document]
    last_start = (len(tokens) - 1) // CHUNK_TOKENS * CHUNK_TOKENS
    started = time.perf_counter()
    state = model.init_state(1)
    for start in range(0, last_start, CHUNK_TOKENS):
        out = model(torch.tensor([tokens[start : start + CHUNK_TOKENS]]), state, store)
        state = out.state
        store_chunk(store, out.memory_kv, start, start + CHUNK_TOKENS)
    store.catch_up()
    read_s = time.perf_counter() - started

    hook = model.retrieval_block.register_forward_hook(record_share)
    try:
        # The question's chunk searches before its own pairs are stored, as in the evaluation.
        readers = {lists: RecordingReader(store) for lists in nprobes}
        firsts = {}
        for lists, reader in readers.items():
            store.view.index.nprobe = lists or store.view.index.lists
            firsts[lists] = model(torch.tensor([tokens[last_start:]]), state, reader)
        store_chunk(store, firsts[nprobes[0]].memory_kv, last_start, len(tokens))
        store.catch_up()
        answers = {}
        for lists, reader in readers.items():
            store.view.index.nprobe = lists or store.view.index.lists
            out = firsts[lists]
            answers[str(lists)] = greedy_answer(model, out.log_probs[0, -1], out.state, reader)
    finally:
        hook.remove()
    result = {
        "key": key.decode(),
        "stored_pairs": len(store),
        "index": store.view.index.kind,
        "lists": store.view.index.lists,
        "read_s": round(read_s, 1),
        "answers": answers,
        "correct": {probes: answer == key.decode() for probes, answer in answers.items()},
    }
    stored = torch.from_numpy(store.view.mirror.live_pairs()[2]).float()  # in stream order: pair t names token t
    first_digit = statement_start(document, key)
    if 0 in readers:
        result["exact_steps"] = statement_pairs(stored, first_digit, key, readers[0], answers["0"])
    statement = stored[first_digit : first_digit + len(key)]
    result["context_cosines"] = context_cosines(model, tokens, key, first_digit, state, tokens[last_start:], statement)
    return result


def question_keys(model: HybridLM, context: list[int], key: bytes, state: State | None = None) -> list[torch.Tensor]:
    """The retrieval keys that ask for each digit: after `context`, then after each true digit but the last."""
    reader = RecordingReader()
    out = model(torch.tensor([context]), model.init_state(1) if state is None else state, reader)
    for digit in key[:-1]:
        out = model(torch.tensor([[digit]]), out.state, reader)
    return reader.queries[-len(key) :]


def cosines(a: list[torch.Tensor], b: list[torch.Tensor]) -> list[float]:
    return [round(float(x @ y), 4) for x, y in zip(a, b)]


@torch.no_grad()
def context_cosines(
    model: HybridLM,
    tokens: list[int],
    key: bytes,
    first_digit: int,
    state: State,
    last_chunk: list[int],
    statement: torch.Tensor,
) -> dict:
    """What the match of question and statement depends on, with the true digits fed (no memory).

    `question_in_stream` / `question_fresh_512`: the question's keys, read in the stream or from a
    fresh state with only the last 512 bytes, against the statement's stored keys (how much the
    recurrent state moves them). `both_fresh`: statement and question each read from a fresh state
    with the same number of bytes before them (how much the text around them does).
    """
    stored = list(statement)
    return {
        "question_in_stream": cosines(question_keys(model, last_chunk, key, state), stored),
        "question_fresh_512": cosines(question_keys(model, tokens[-512:], key), stored),
        "both_fresh": {
            str(length): cosines(
                question_keys(model, tokens[-length:], key),
                question_keys(model, tokens[max(0, first_digit - length) : first_digit], key),
            )
            for length in (16, 64, 256)
        },
    }


def statement_start(document: bytes, key: bytes) -> int:
    """Stream position of the stated key's first digit (+1: the stream starts with BEGIN)."""
    return 1 + document.index(PASSKEY_STATEMENT + key) + len(PASSKEY_STATEMENT)


def statement_pairs(
    keys: torch.Tensor, first_digit: int, key: bytes, reader: RecordingReader, answer: str
) -> list[dict]:
    """Per answer step: how the statement's pair for that digit (keys[first_digit + step]) stood against all."""
    steps = []
    for step, digit in enumerate(key.decode()):
        similarity = keys @ reader.queries[step]
        mine = similarity[first_digit + step].item()
        others = similarity.clone()
        others[first_digit + step] = -2.0
        steps.append(
            {
                "digit": digit,
                "produced": answer[step],
                "cosine": round(mine, 4),
                "rank": int((similarity > mine).sum()),
                "best_other_cosine": round(others.max().item(), 4),
                "memory_share": round(reader.shares[step], 4),
            }
        )
    return steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    parser.add_argument("--checkpoint", type=Path, default=SHIPPED_CHECKPOINT)
    parser.add_argument("--corpus", type=Path, default=Path("data/corpus"), help="held-out filler comes from here")
    parser.add_argument("--distance", type=int, default=1 << 20)
    parser.add_argument("--trial", type=int, default=2, help="which trial of that distance (0-based)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nprobe", default="10,16,32,64,0", help="probe counts to answer with; 0 is exact search")
    args = parser.parse_args(argv)
    try:
        nprobes = [int(n) for n in args.nprobe.split(",")]
    except ValueError:
        parser.error(f"--nprobe takes comma-separated whole numbers, not {args.nprobe!r}")
    if args.trial < 0 or any(n < 0 for n in nprobes):
        parser.error("--trial and --nprobe take non-negative numbers")

    torch.manual_seed(args.seed)
    model = HybridLM.load(args.checkpoint).eval()
    rng = random.Random(f"{args.seed}-{args.distance}")  # as `lifelong eval passkey` draws its trials
    pool = filler_pool(args.corpus)
    for _ in range(args.trial + 1):
        trial = passkey_trial(pool.data, rng, args.distance)
    document, key = trial.document, trial.key
    with tempfile.TemporaryDirectory() as tmp:
        memory = TrialMemory(Path(tmp), model.config.head_dim)
        result = {
            "checkpoint": str(args.checkpoint),
            "distance": args.distance,
            "trial": args.trial,
            "seed": args.seed,
            **probe_trial(model, document, key, memory.new_store(), nprobes),
        }
        memory.engine.dispose()
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
