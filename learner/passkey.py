"""Passkey recall: a 5-digit key stated once, asked for after up to a million bytes of natural text.

With retrieval the agent's real memory store (SQL + FAISS, in a temporary SQLite
file) holds what was read; without, only the recurrent state and the attention
window can carry the key, which they cannot beyond the window.
"""

from __future__ import annotations

import bisect
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from learner.synthetic import passkey_trial
from memory.db import make_engine, make_session_factory
from memory.migrate import upgrade
from memory.schema import Agent
from memory.store import MemoryStore, Span
from models import HybridLM, MemoryKV, Special, State

NATURAL_SOURCES = ("python-docs", "gcide", "jargon", "fortunes")
# How many bytes before a statement or a question name the kind of text it is read in: a retrieval
# key reflects the text within a few hundred bytes of its token.
CONTEXT_BYTES = 256


@dataclass
class PasskeyResult:
    distance: int
    retrieval: bool
    trials: int = 0
    correct: int = 0
    answers: list[tuple[str, str]] = field(default_factory=list)  # (expected, produced)
    # Per trial, the sources of the text just before the statement and just before the question.
    contexts: list[tuple[str, str]] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return self.correct / max(1, self.trials)

    @property
    def mixed(self) -> tuple[int, int]:
        """(recalled, trials) among trials whose statement and question are read in different kinds of text."""
        mixed = [expected == produced for (expected, produced), (stated, asked) in zip(self.answers, self.contexts)
                 if stated != asked]
        return sum(mixed), len(mixed)


@dataclass(frozen=True)
class FillerPool:
    """Natural held-out text (never trained on) to hide passkeys in, and where each source's text lies."""

    data: bytes
    starts: tuple[int, ...]  # offset of each document, ascending
    sources: tuple[str, ...]  # its source

    def sources_of(self, start: int, length: int, context: int = CONTEXT_BYTES) -> str:
        """The source(s) of the last `context` bytes of the filler cut at `start` ("/"-joined; "none" when empty)."""
        offsets = range(start + max(0, length - context), start + length)
        found = {self.sources[bisect.bisect_right(self.starts, i % len(self.data)) - 1] for i in offsets}
        return "/".join(sorted(found)) or "none"


def filler_pool(corpus: Path, max_bytes: int = 4 << 20) -> FillerPool:
    from learner.corpus import read_documents

    pool, starts, sources = bytearray(), [], []
    for document in read_documents(corpus, "heldout", NATURAL_SOURCES):
        starts.append(len(pool))
        sources.append(document.source)
        pool += document.data
        if len(pool) >= max_bytes:
            break
    if len(pool) < 4096:
        raise ValueError(f"{corpus} has too little held-out natural text for passkey filler")
    return FillerPool(bytes(pool), tuple(starts), tuple(sources))


class TrialMemory:
    """A fresh agent memory per trial in one temporary database."""

    def __init__(self, directory: Path, head_dim: int):
        url = f"sqlite:///{directory / 'passkey.db'}"
        upgrade(url)
        self.engine = make_engine(url)
        self.sessions = make_session_factory(self.engine)
        self.head_dim = head_dim

    def new_store(self) -> MemoryStore:
        with self.sessions.begin() as db:
            agent = Agent(name=f"trial-{random.getrandbits(48)}", base_checkpoint="eval")
            db.add(agent)
            db.flush()
            agent_id = agent.id
        return MemoryStore(agent_id=agent_id, sessions=self.sessions, head_dim=self.head_dim)


CHUNK_TOKENS = 512  # the evaluation reads a document this many tokens at a time


def store_chunk(store: MemoryStore, pairs: MemoryKV, start: int, end: int) -> None:
    """Commit one chunk's retrieval pairs (batch row 0), tokens [start, end) of the stream."""
    store.add_spans([Span(keys=pairs.keys[0], values=pairs.values[0], text=b"", byte_start=start, byte_end=end)])


@torch.no_grad()
def recall_passkey(model: HybridLM, document: bytes, store: MemoryStore | None, chunk_tokens: int = CHUNK_TOKENS,
                   question_step: bool = False) -> str:
    """Read `document` (ending in the question), then greedily produce 5 bytes: the model's answer.

    A chunk's pairs are stored once it is read, so the first digit can be recalled only from earlier
    chunks. With `question_step` the question's last byte is read as a step of its own, after
    everything before it is stored, as serving reads a chat prompt (memory.recent).
    """
    tokens = [int(Special.BEGIN), *document]
    end = len(tokens) - 1 if question_step else len(tokens)
    pieces = [(start, min(start + chunk_tokens, end)) for start in range(0, end, chunk_tokens)]
    pieces += [(end, end + 1)] if question_step else []
    state = model.init_state(1)
    if store is not None:
        store.catch_up()  # searches read RAM only; each stored chunk catches up as it commits (add_spans)
    for start, stop in pieces:
        out = model(torch.tensor([tokens[start:stop]]), state, store)
        state = out.state
        if store is not None and out.memory_kv is not None:
            store_chunk(store, out.memory_kv, start, stop)
    return greedy_answer(model, out.log_probs[0, -1], state, store)


@torch.no_grad()
def greedy_answer(model: HybridLM, logits: torch.Tensor, state: State, store: MemoryStore | None,
                  length: int = 5) -> str:
    """`length` bytes produced greedily from `logits` (the next byte's) and the stream state after them."""
    answer = []
    for _ in range(length):
        token = int(logits[:256].argmax())
        answer.append(token)
        out = model(torch.tensor([[token]]), state, store)
        state, logits = out.state, out.log_probs[0, -1]
    return bytes(answer).decode("utf-8", errors="replace")


def passkey_eval(
    model: HybridLM,
    pool: FillerPool,
    *,
    distances: list[int],
    trials: dict[int, int],
    retrieval_modes: tuple[bool, ...] = (True, False),
    seed: int = 0,
    question_step: bool = False,
) -> list[PasskeyResult]:
    """Accuracy per (distance, retrieval on/off); trial i of a distance uses the same key and filler in both modes."""
    model.eval()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        memory = TrialMemory(Path(tmp), model.config.head_dim)
        for distance in distances:
            rng = random.Random(f"{seed}-{distance}")
            drawn = [passkey_trial(pool.data, rng, distance) for _ in range(trials[distance])]
            for retrieval in retrieval_modes:
                result = PasskeyResult(distance, retrieval)
                for trial in drawn:
                    produced = recall_passkey(
                        model, trial.document, memory.new_store() if retrieval else None, question_step=question_step
                    )
                    result.trials += 1
                    result.correct += produced == trial.key.decode()
                    result.answers.append((trial.key.decode(), produced))
                    result.contexts.append(
                        (pool.sources_of(*trial.before_statement), pool.sources_of(*trial.before_question))
                    )
                results.append(result)
        memory.engine.dispose()
    return results
