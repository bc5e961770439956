"""Prequential evaluation: every chunk is scored before anything learns from it.

Four arms over the same text, each from the same base weights:
  static      the base model, its recurrent state carried, no memory, no learning
  retrieval   plus the retrieval memory of everything read so far
  learning    plus online learning (dynamic evaluation), no memory
  both        memory and learning together
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from learner.online import Chunk, LearningConfig, OnlineLearner, stream_chunks
from memory.schema import Event
from memory.stream_format import event_reading_tokens
from models import HybridLM, LanguageModel, Special, TensorMemory

ARMS = ("static", "retrieval", "learning", "both")


@dataclass
class ArmResult:
    arm: str
    positions: list[int] = field(default_factory=list)  # byte offset where each scored chunk ends
    chunk_bpb: list[float] = field(default_factory=list)  # bits per byte of each chunk, before learning from it
    bytes_scored: int = 0
    bits: float = 0.0

    @property
    def bits_per_byte(self) -> float:
        return self.bits / max(1, self.bytes_scored)


def prequential(
    base: HybridLM,
    data: bytes,
    *,
    arm: str,
    chunk_tokens: int = 512,
    learning: LearningConfig = LearningConfig(),
    memory_tokens: int | None = 65_536,
) -> ArmResult:
    """Score `data` chunk by chunk for one arm; the base model is never modified."""
    if arm not in ARMS:
        raise ValueError(f"arm must be one of {ARMS}, got {arm!r}")
    if len(data) < 2:
        raise ValueError("the text must hold at least 2 bytes")
    model = copy.deepcopy(base)
    learns = arm in ("learning", "both")
    learner = OnlineLearner(model, learning if learns else LearningConfig(learning_rate=0.0))
    memory = TensorMemory(model.config.head_dim, capacity=memory_tokens, one_stream=True) \
        if arm in ("retrieval", "both") else None
    tokens = torch.tensor([[int(Special.BEGIN), *data]])
    state, result = model.init_state(1), ArmResult(arm)
    for inputs, targets in stream_chunks(tokens, chunk_tokens):
        if learns:
            step = learner.step(Chunk(inputs, targets, state), memory)
        else:
            with torch.no_grad():
                step = learner.step(Chunk(inputs, targets, state), memory)
        state = step.state
        if memory is not None and step.memory_kv is not None:
            memory.add(*step.memory_kv)
        bits = step.loss * step.tokens / math.log(2)
        result.bytes_scored += step.tokens
        result.bits += bits
        result.positions.append(result.bytes_scored)
        result.chunk_bpb.append(bits / step.tokens)
    return result


def plot_arms(results: list[ArmResult], path: Path, title: str, window: int = 8) -> None:
    """Bits per byte against position for each arm (moving average over `window` chunks), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4.5))
    for result in results:
        values = result.chunk_bpb
        smoothed = [sum(values[max(0, i - window + 1) : i + 1]) / len(values[max(0, i - window + 1) : i + 1])
                    for i in range(len(values))]
        axes.plot(result.positions, smoothed, label=f"{result.arm} ({result.bits_per_byte:.3f} bpb)")
    axes.set_xlabel("position (bytes)")
    axes.set_ylabel(f"bits per byte (moving average of {window} chunks)")
    axes.set_title(title)
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


@torch.no_grad()
def bits_per_byte(model: LanguageModel, data: bytes, chunk_tokens: int = 512) -> float:
    """Bits per byte of `data` read as one fresh document stream by a fixed model (state carried, no
    memory): every token of `data` is scored, after the stream's first token."""
    tokens = torch.tensor([[model.tokenizer.chat.document_start[0], *model.tokenizer.encode(data)]])
    state, bits = model.init_state(1), 0.0
    for inputs, targets in stream_chunks(tokens, chunk_tokens):
        out = model(inputs, state)
        state = out.state
        bits += model.loss(out.log_probs, targets).item() * targets.numel() / math.log(2)
    return bits / max(1, len(data))


@torch.no_grad()
def user_turn_bits_per_byte(model: LanguageModel, messages: list[bytes]) -> float:
    """Bits per byte of what a user says, read as the model reads it in a chat: each message as the user's
    turn opening a new session (the format's start and system prompt, the user prefix); only its content
    tokens are scored. What learning from chat turns should lower; a document stream (`bits_per_byte`)
    reads the same words outside the format the learner learned them in."""
    bits, scored = 0.0, 0
    for message in messages:
        event = Event(role="user", content=message, seq=0, document_id=None)
        tokens, lengths = event_reading_tokens(event, model.tokenizer, starts_stream=True)
        inputs = torch.tensor([[model.tokenizer.chat.chat_start[0], *tokens[:-1]]])
        targets = torch.tensor(tokens)
        log_probs = model(inputs, model.init_state(1)).log_probs[0]
        content = torch.tensor([length > 0 for length in lengths])
        bits -= log_probs[content].gather(-1, targets[content, None]).sum().item() / math.log(2)
        scored += len(message)
    return bits / max(1, scored)


def heldout_bits_per_byte(model: LanguageModel, corpus: Path, *, max_bytes: int = 65_536,
                          sources: tuple[str, ...] | None = None) -> dict[str, float]:
    """Per corpus source: bits per byte over (up to `max_bytes` of) its held-out documents."""
    from learner.corpus import read_documents

    per_source: dict[str, list[bytes]] = {}
    for document in read_documents(corpus, "heldout", sources):
        taken = sum(len(d) for d in per_source.get(document.source, []))
        if taken < max_bytes:
            per_source.setdefault(document.source, []).append(document.data[: max_bytes - taken])
    return {source: bits_per_byte(model, b"".join(parts)) for source, parts in per_source.items()}


def forgetting(
    base: HybridLM, corpus: Path, stream: bytes, *, learning: LearningConfig, chunk_tokens: int = 512,
    max_bytes: int = 65_536,
) -> dict[str, dict[str, float]]:
    """Held-out bits per byte per source before and after learning `stream` online (ratio > 1: forgetting)."""
    before = heldout_bits_per_byte(base, corpus, max_bytes=max_bytes)
    model = copy.deepcopy(base)
    learner = OnlineLearner(model, learning)
    tokens = torch.tensor([[int(Special.BEGIN), *stream]])
    state = model.init_state(1)
    for inputs, targets in stream_chunks(tokens, chunk_tokens):
        state = learner.step(Chunk(inputs, targets, state)).state
    model.eval()
    after = heldout_bits_per_byte(model, corpus, max_bytes=max_bytes)
    return {s: {"before": before[s], "after": after[s], "ratio": after[s] / before[s]} for s in before}
