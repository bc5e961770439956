"""Synthetic long-range documents that teach the retrieval layer to retrieve.

Each one states something once and asks for it thousands of bytes later, over
natural filler text: a passkey, key-value facts, a passage repeated verbatim, or
many random records recalled later. Random keys and values matter: text the
model can memorise in its weights teaches it nothing about copying from context.
Deterministic for a seed; the filler comes from whatever split is being built,
so held-out tasks use held-out filler.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass


def _filler_start(pool: bytes, rng: random.Random, length: int) -> int:
    """Where `length` filler bytes start in `pool` (0 where the pool is too short and repeats)."""
    return 0 if len(pool) <= length else rng.randrange(0, len(pool) - length)


def _cut(pool: bytes, start: int, length: int) -> bytes:
    if len(pool) <= length:
        return (pool * (length // max(len(pool), 1) + 1))[:length]
    return pool[start : start + length]


def _filler(pool: bytes, rng: random.Random, length: int) -> bytes:
    return _cut(pool, _filler_start(pool, rng, length), length)


PASSKEY_STATEMENT = b"The pass key is "  # precedes the key where it is stated, and ends the question
PASSKEY_QUESTION = b"\nWhat is the pass key? " + PASSKEY_STATEMENT  # the answer is what comes next


def passkey_statement(key: bytes) -> bytes:
    """Where a passkey is stated (once, in its own line)."""
    return b"\n" + PASSKEY_STATEMENT + key + b". Remember it. " + key + b" is the pass key.\n"


@dataclass(frozen=True)
class PasskeyTrial:
    document: bytes  # ends right after the question, so the answer is what comes next
    key: bytes  # 5 digits
    # (start, length) in the pool of the filler just before the statement and of the filler between
    # statement and question: the kinds of text the two are read in.
    before_statement: tuple[int, int]
    before_question: tuple[int, int]


def passkey_trial(pool: bytes, rng: random.Random, distance: int) -> PasskeyTrial:
    """A 5-digit passkey stated once after up to 2,000 filler bytes, asked for `distance` filler bytes later."""
    key = f"{rng.randrange(10_000, 100_000)}".encode()
    before_length = rng.randrange(0, 2_000)
    before = (_filler_start(pool, rng, before_length), before_length)
    between = (_filler_start(pool, rng, distance), distance)
    document = _cut(pool, *before) + passkey_statement(key) + _cut(pool, *between) + PASSKEY_QUESTION
    return PasskeyTrial(document, key, before, between)


def facts_document(pool: bytes, rng: random.Random, facts: int, gap: int) -> bytes:
    """Key-value facts scattered through filler, then each asked for (and answered) later."""
    names = [
        f"{rng.choice(['amber', 'cobalt', 'linen', 'saffron', 'umber'])}-{rng.randrange(1000, 9999)}"
        for _ in range(facts)
    ]
    values = [f"{rng.randrange(100_000, 999_999)}" for _ in range(facts)]
    parts = []
    for name, value in zip(names, values):
        parts += [_filler(pool, rng, gap), f"\nThe code for {name} is {value}.\n".encode()]
    parts.append(_filler(pool, rng, gap))
    for i in rng.sample(range(facts), facts):
        parts.append(f"\nQ: What is the code for {names[i]}? A: {values[i]}.\n".encode())
    return b"".join(parts)


def repeat_document(pool: bytes, rng: random.Random, passage: int, gap: int) -> bytes:
    """A passage, filler, then the same passage again verbatim."""
    text = _filler(pool, rng, passage)
    return text + _filler(pool, rng, gap) + text


def records_document(pool: bytes, rng: random.Random, records: int, gap: int) -> bytes:
    """Random `[name] = value` records with filler between, then every one recalled in random order.

    Dense in copying: each recall's value can only come from where it was stated.
    """
    letters = "ABCDEFGHJKLMNPQRSTUVWXYZ"
    names = [f"{''.join(rng.choices(letters, k=2))}-{rng.randrange(1000, 9999)}" for _ in range(records)]
    values = [f"{rng.randrange(10_000, 100_000)}" for _ in range(records)]
    parts = []
    for name, value in zip(names, values):
        parts += [f"\n[{name}] = {value}\n".encode(), _filler(pool, rng, rng.randrange(0, gap + 1))]
    for i in rng.sample(range(records), records):
        parts.append(f"\nRecall [{names[i]}]: {values[i]}\n".encode())
    return b"".join(parts)


KINDS = ("passkey", "facts", "repeat", "records")

# Where the tasks above ask for something stated earlier: the bytes a recall must produce. A
# passage's repeat is left out: its first bytes can only be guessed until the copy is recognised.
RECALLED_VALUES = (
    re.compile(re.escape(PASSKEY_QUESTION) + rb"(\d+)"),
    re.compile(rb"\nQ: What is the code for [a-z]+-\d+\? A: (\d+)"),
    re.compile(rb"\nRecall \[[A-Z]+-\d+\]: (\d+)"),
)


def recall_positions(document: bytes) -> bytearray:
    """1 at each byte of `document` that a synthetic task's recall must produce, 0 elsewhere.

    Training can weigh these: few positions in any mix of text need a recall, and the average
    loss alone trades them for the many where a near match of new text costs bits.
    """
    marks = bytearray(len(document))
    for pattern in RECALLED_VALUES:
        for found in pattern.finditer(document):
            marks[found.start(1) : found.end(1)] = b"\x01" * (found.end(1) - found.start(1))
    return marks


def synthetic_documents(
    pool: bytes,
    *,
    count: int,
    seed: int,
    max_distance: int = 16_000,
    min_distance: int = 1_000,
    kinds: tuple[str, ...] = KINDS[:3],
) -> Iterator[tuple[str, bytes]]:
    """`count` (name, document) pairs cycling through `kinds`, distances log-uniform in [min, max] bytes.

    The default ceiling matches base training's per-stream memory (16K tokens): a
    fact stated further back than the memory reaches teaches nothing. Passkey
    evaluation goes far beyond it, which is the point: retrieval is by content.
    """
    rng = random.Random(seed)
    for i in range(count):
        distance = int(min_distance * 2 ** rng.uniform(0, math.log2(max_distance / min_distance)))
        kind = kinds[i % len(kinds)]
        if kind == "passkey":
            trial = passkey_trial(pool, rng, distance)
            yield f"passkey-{i:06d}", trial.document + trial.key + b".\n"
        elif kind == "facts":
            yield f"facts-{i:06d}", facts_document(pool, rng, facts=rng.randrange(3, 9), gap=distance // 4)
        elif kind == "repeat":
            yield f"repeat-{i:06d}", repeat_document(pool, rng, passage=rng.randrange(200, 2_000), gap=distance)
        elif kind == "records":
            yield f"records-{i:06d}", records_document(pool, rng, records=rng.randrange(8, 25), gap=distance // 8)
        else:
            raise ValueError(f"unknown synthetic kind {kind!r}; expected one of {KINDS}")
