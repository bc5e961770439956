"""The online learning step: dynamic evaluation with retrieval, plus its guards against forgetting.

A chunk is first scored (its loss before any update is the prequential score),
then learned: one SGD step on the trainable parameters, gradients clipped,
weights pulled back toward the base checkpoint (anchoring), and optionally an
extra step on replayed earlier chunks. The step also returns the chunk's
retrieval (key, value) pairs for the memory store. Plain functions: no Celery,
no SQL, no HTTP.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from models import HybridLM, LanguageModel, MemoryKV, MemoryReader, State
from models.adapters import is_adapter
from models.cpu import bf16_products_are_fast

Trainable = Literal["downstream", "adapters", "all"]


# A per-entry step larger than this wrecks any model in one step (the defaults are 1e-3 and 3e-4).
MAX_LEARNING_RATE = 1.0


@dataclass(frozen=True)
class LearningConfig:
    """How an agent learns online; every field is checked, so a stored setting never fails a later step."""

    # Step size (per entry under the normalized rule); 0 turns learning off entirely (weights stay
    # bit-identical). The defaults here were chosen by measurement on the shipped small checkpoint
    # (BENCHMARKS.md, "Learning"): the largest step whose forgetting stays about 1.02.
    learning_rate: float = 1e-3
    # "downstream": only what cannot change stored keys/values (they never go stale): a model's norm scales;
    # "adapters": low-rank adapters on the projections that compute no stored pair (models.adapters; imported
    # models), which leave stored keys and values valid too; "all": every parameter (stored pairs must then be
    # re-encoded).
    trainable: Trainable = "downstream"
    # The adapters' rank, with trainable="adapters" (BENCHMARKS.md, "What learns, judged on what the model says").
    adapter_rank: int = 8
    # Fraction of the distance to the base weights removed after each step (dynamic evaluation's
    # anchoring): the smallest that keeps the forgetting evaluation within its bound (BENCHMARKS.md,
    # "Choosing the online learning settings").
    anchor_decay: float = 2e-3
    # Global gradient-norm clip (plain SGD only: the normalized rule rescales each tensor anyway).
    grad_clip: float = 1.0
    # "normalized": each tensor's step is its gradient divided by that gradient's RMS, so the learning
    # rate is a per-entry step size whatever the gradient scale (a stateless cousin of the RMS-scaled
    # updates of dynamic evaluation); "sgd": plain clipped SGD, whose steps shrink with the gradients
    # of a well-trained model until learning does nothing.
    rule: Literal["normalized", "sgd"] = "normalized"
    # Whether the agent's own replies are targets. They are always read (they are context for what follows)
    # and scored; learning them trains the model on what it already believes, which collapses a small model
    # onto its own phrases (BENCHMARKS.md, "Learning from what it is told").
    learn_from_replies: bool = False
    # Every this many learned events, the behavioural gate (learner.gate) probes the learned weights; weights that
    # do worse than the last good ones are refused and learning goes on from those. 0: no gate.
    gate_every: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.learn_from_replies, bool):
            raise ValueError(f"learn_from_replies must be true or false, got {self.learn_from_replies!r}")
        if isinstance(self.gate_every, bool) or not isinstance(self.gate_every, int) or self.gate_every < 0:
            raise ValueError(f"gate_every must be a whole number of events, 0 or more, got {self.gate_every!r}")
        for name in ("learning_rate", "anchor_decay", "grad_clip"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if not 0 <= self.learning_rate <= MAX_LEARNING_RATE:
            raise ValueError(f"learning_rate must be in [0, {MAX_LEARNING_RATE}], got {self.learning_rate}")
        if not 0 <= self.anchor_decay < 1 or self.grad_clip <= 0:
            raise ValueError("0 <= anchor_decay < 1 and grad_clip > 0 are required")
        if self.rule not in ("normalized", "sgd"):
            raise ValueError(f"rule must be 'normalized' or 'sgd', got {self.rule!r}")
        if self.trainable not in ("downstream", "adapters", "all"):
            raise ValueError(f"trainable must be 'downstream', 'adapters' or 'all', got {self.trainable!r}")
        rank = self.adapter_rank
        if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= 256:
            raise ValueError(f"adapter_rank must be a whole number from 1 to 256, got {self.adapter_rank!r}")


@dataclass(frozen=True)
class Chunk:
    """Inputs and their next-token targets, with the state that had read everything before the inputs."""

    inputs: torch.Tensor  # (1, T)
    targets: torch.Tensor  # (1, T)
    state: State


@dataclass(frozen=True)
class StepResult:
    loss: float  # mean cross entropy in nats before the update: the prequential score
    tokens: int
    state: State  # after the inputs, computed with the pre-update weights
    memory_kv: MemoryKV | None  # the chunk's retrieval pairs, pre-update weights
    # Per position (1, T, K): the stored pairs the prediction weighed (ids, -1 for none) and each
    # one's share of it (`MemoryPointer.pair_shares`); None without a memory. Hit counts come from these.
    recalled_ids: torch.Tensor | None = None
    recalled_shares: torch.Tensor | None = None

    @property
    def bits_per_byte(self) -> float:
        return self.loss / math.log(2)


def gradient_masks(model: LanguageModel, trainable: Trainable, adapter_rank: int = 8) -> dict[str, torch.Tensor | None]:
    """Per trainable parameter, None (learn all of it) or a 0/1 mask of the entries that may learn:
    everything ("all"), what the model says may learn while its stored pairs stay valid ("downstream"), or
    its adapters ("adapters": added to the model, fresh, where it has none yet)."""
    if trainable == "all":
        return {name: None for name, _ in model.named_parameters()}
    if trainable == "adapters":
        names = [name for name, _ in model.named_parameters() if is_adapter(name)] or model.add_adapters(adapter_rank)
        return dict.fromkeys(names)
    return model.downstream_masks()


def bf16_learning_pays(model: LanguageModel) -> bool:
    """Whether `model` learns faster computing in bf16: an imported model on a device with bf16 arithmetic
    (`models.cpu.bf16_products_are_fast`). Its products and attention then run in bf16 while its weights,
    their steps and the loss stay fp32 (mixed precision): 1.7x the bytes learned per second at +0.3% bits
    per byte (BENCHMARKS.md, "Learning at reading speed"). The native model keeps fp32: its recurrence is
    not measured in bf16."""
    if not model.capabilities.pretrained:
        return False
    device = next(model.parameters()).device
    return torch.cuda.is_bf16_supported() if device.type == "cuda" else bf16_products_are_fast()


class OnlineLearner:
    """Holds the base weights (for anchoring) and which entries learn; `step` does the work."""

    def __init__(self, model: LanguageModel, config: LearningConfig, *, bf16: bool | None = None):
        """What learns is `config.trainable`'s choice (`gradient_masks`; adapters are added to `model` here).
        `bf16`: compute in bf16 under autocast (default: where `bf16_learning_pays`)."""
        self.model = model
        self.config = config
        self.bf16 = bf16_learning_pays(model) if bf16 is None else bf16
        self.masks = gradient_masks(model, config.trainable, config.adapter_rank)
        params = dict(model.named_parameters())
        self.params = {name: params[name] for name in self.masks}
        self.base = {name: p.detach().clone() for name, p in self.params.items()}
        for name, param in model.named_parameters():
            param.requires_grad_(name in self.masks)

    def learns_from(self, role: str) -> bool:
        """Whether an event of `role` is a target (a document's chunks have role "document")."""
        return role != "assistant" or self.config.learn_from_replies

    def step(self, chunk: Chunk, memory: MemoryReader | None = None, replay: Sequence[Chunk] = (), *,
             learn: bool = True) -> StepResult:
        """Score the chunk, then learn from it (and from `replay`) unless `learn` is false or the learning
        rate is 0 (then it is only read: the state moves on, the weights stay bit-identical)."""
        self.model.train()
        learns = learn and self.config.learning_rate > 0 and bool(self.params)
        with torch.autocast(next(self.model.parameters()).device.type, torch.bfloat16, enabled=self.bf16):
            out = self.model(chunk.inputs, chunk.state, memory)
            loss = self.model.loss(out.log_probs, chunk.targets)
            total = loss
            for old in replay if learns else ():
                old_out = self.model(old.inputs, old.state, memory)
                total = total + self.model.loss(old_out.log_probs, old.targets)
        if learns:
            total.backward()
            self._update()
        pointer, pairs = out.pointer, out.memory_kv
        if pairs is not None and self.bf16:  # what it stores is fp32 pairs, however computed
            pairs = MemoryKV(pairs.keys.float(), pairs.values.float())
        return StepResult(loss=loss.item(), tokens=chunk.targets.numel(), state=out.state, memory_kv=pairs,
                          recalled_ids=None if pointer is None else pointer.ids,
                          recalled_shares=None if pointer is None else pointer.pair_shares().detach())

    @torch.no_grad()
    def _update(self) -> None:
        grads = [p.grad for p in self.params.values() if p.grad is not None]
        for name, param in self.params.items():
            if param.grad is not None and self.masks[name] is not None:
                param.grad.mul_(self.masks[name])
        if self.config.rule == "sgd":
            torch.nn.utils.clip_grad_norm_(grads, self.config.grad_clip)
        for name, param in self.params.items():
            if param.grad is None:
                continue
            if self.config.rule == "normalized":
                mask = self.masks[name]
                entries = param.grad.numel() if mask is None else mask.sum()
                param.grad.div_((param.grad.square().sum() / entries).sqrt().clamp_min(1e-12))
            param.add_(param.grad, alpha=-self.config.learning_rate)
            if self.config.anchor_decay:
                param.lerp_(self.base[name], self.config.anchor_decay)
            param.grad = None


# Log-probabilities one step may hold (fp32): a 262K-token vocabulary reads 256 tokens per step, a
# byte vocabulary its whole chunk.
LOGITS_PER_STEP = 1 << 26


def step_tokens(model: LanguageModel, chunk_tokens: int) -> int:
    """Tokens per learning step: `chunk_tokens`, fewer where the vocabulary would make the step's
    log-probabilities larger than LOGITS_PER_STEP."""
    return max(1, min(chunk_tokens, LOGITS_PER_STEP // model.config.vocab_size))


def stream_chunks(tokens: torch.Tensor, chunk_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(inputs, targets) pairs covering a (1, N) stream: consecutive chunks overlap by one token,
    so every token after the first is a target exactly once."""
    for start in range(0, tokens.shape[1] - 1, chunk_size):
        end = min(start + chunk_size, tokens.shape[1] - 1)
        yield tokens[:, start:end], tokens[:, start + 1 : end + 1]


@torch.no_grad()
def reencode(model: HybridLM, chunks: Iterable[torch.Tensor], state: State | None = None) -> Iterator[MemoryKV]:
    """Recompute the retrieval pairs of a source's chunks with the current weights, replaying it in order.

    Needed when `trainable="all"`: stored keys came from older weights. Keys depend on
    everything read before them, so a source is replayed from its start.
    """
    for inputs in chunks:
        out = model(inputs, state)
        state = out.state
        yield out.memory_kv
