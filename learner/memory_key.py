"""Fit the retrieval block's memory key map so a context matches itself across kinds of text.

The memory key of a token is a learned map of its window key and value
(`RetrievalAttention.memory_keys`). Trained with the language-model loss it learns
to silence memory (recall positions are rare, and a weaker memory costs little
elsewhere); so it is fitted here for what a recall needs: the same passage read
after two unrelated texts should give the same key at each of its positions, and
any other position a different one. That is a contrastive (InfoNCE) fit at the
memory's own sharpness, on features of the frozen model, over training text only.

Letters: N pairs, L passage bytes, F = 2D features ([unit window key | value]), D key dim.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from models import HybridLM, Special
from models.attention import MEMORY_SCALE


@dataclass(frozen=True)
class MemoryKeyFit:
    context_bytes: int = 512  # unrelated text before each reading of a passage (the window's reach)
    min_passage: int = 32
    max_passage: int = 192
    min_offset: int = 4  # positives start this many bytes into the passage (shorter shared suffixes say little)
    pairs_per_batch: int = 24  # passages read twice per forward batch
    steps: int = 1500
    learning_rate: float = 1e-3
    queries_per_step: int = 512
    seed: int = 0


@dataclass
class PassageFeatures:
    first: list[torch.Tensor]  # per pair (L, F): the passage's features after its first context
    second: list[torch.Tensor]  # per pair (L, F): the same passage after another context
    negatives: torch.Tensor  # (M, F): features of context positions (text that is not the passage)


def _cut(pool: bytes, rng: random.Random, length: int) -> bytes:
    start = rng.randrange(0, len(pool) - length)
    return pool[start : start + length]


@torch.no_grad()
def block_features(model: HybridLM, sequences: list[bytes]) -> torch.Tensor:
    """(B, T, F) [unit window key | value] of the retrieval block for equal-length byte sequences."""
    block = model.retrieval_block
    captured: dict[str, torch.Tensor] = {}

    def keep_input(module: torch.nn.Module, inputs: tuple, output: tuple) -> None:
        captured["x"] = inputs[0]  # the block's normed residual stream

    hook = block.register_forward_hook(keep_input)
    try:
        model(torch.tensor([[int(Special.BEGIN), *s] for s in sequences]))
    finally:
        hook.remove()
    _, k, v = block.project(captured["x"])
    return torch.cat([F.normalize(k, dim=-1), v], dim=-1).float()


def collect(model: HybridLM, pool: bytes, *, batches: int, fit: MemoryKeyFit, seed: int) -> PassageFeatures:
    """Passages of `pool` read after two unrelated stretches of `pool`, batch by batch."""
    rng = random.Random(seed)
    features = PassageFeatures([], [], torch.zeros(0, 2 * model.config.head_dim))
    negatives = []
    for _ in range(batches):
        length = rng.randrange(fit.min_passage, fit.max_passage + 1)
        passages = [_cut(pool, rng, length) for _ in range(fit.pairs_per_batch)]
        sequences = [_cut(pool, rng, fit.context_bytes) + p for p in passages for _ in range(2)]
        feats = block_features(model, sequences)[:, 1:]  # (2N, C + L, F), BEGIN dropped
        passage = feats[:, fit.context_bytes :]
        features.first += list(passage[0::2])
        features.second += list(passage[1::2])
        negatives.append(feats[:, fit.context_bytes - 64 : fit.context_bytes].reshape(-1, feats.shape[-1]))
    features.negatives = torch.cat(negatives)
    return features


def _unit(features: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return F.normalize(features @ weight, dim=-1)


def _batch(features: PassageFeatures, rng: torch.Generator, count: int, fit: MemoryKeyFit):
    """Keys: every first-reading position of `count` pairs plus negatives; queries: their second readings."""
    chosen = torch.randperm(len(features.first), generator=rng)[:count].tolist()
    keys = torch.cat([features.first[i] for i in chosen])
    starts = torch.tensor([0] + [features.first[i].shape[0] for i in chosen]).cumsum(0)[:-1]
    queries = torch.cat([features.second[i][fit.min_offset :] for i in chosen])
    targets = torch.cat([start + torch.arange(fit.min_offset, features.first[i].shape[0])
                         for start, i in zip(starts.tolist(), chosen)])
    negatives = features.negatives[torch.randint(0, len(features.negatives), (keys.shape[0],), generator=rng)]
    return queries, torch.cat([keys, negatives]), targets


def contrastive_loss(weight: torch.Tensor, queries: torch.Tensor, keys: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    scores = _unit(queries, weight) @ _unit(keys, weight).T * MEMORY_SCALE
    return F.cross_entropy(scores, targets)


def fit_memory_key(initial: torch.Tensor, train: PassageFeatures, fit: MemoryKeyFit) -> tuple[torch.Tensor, list[float]]:
    """The fitted (F, D) map and its loss every 100 steps."""
    weight = initial.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([weight], lr=fit.learning_rate)
    rng = torch.Generator().manual_seed(fit.seed)
    history = []
    for step in range(fit.steps):
        queries, keys, targets = _batch(train, rng, 16, fit)
        keep = torch.randperm(len(queries), generator=rng)[: fit.queries_per_step]
        loss = contrastive_loss(weight, queries[keep], keys, targets[keep])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 100 == 0 or step == fit.steps - 1:
            history.append(round(loss.item(), 4))
    return weight.detach(), history


@torch.no_grad()
def match_report(weight: torch.Tensor, features: PassageFeatures, fit: MemoryKeyFit) -> dict:
    """How a map matches passages across contexts: the positives' cosine, the best other key's, top-1 rate."""
    rng = torch.Generator().manual_seed(fit.seed + 1)
    queries, keys, targets = _batch(features, rng, min(64, len(features.first)), fit)
    similarity = _unit(queries, weight) @ _unit(keys, weight).T
    positive = similarity[torch.arange(len(targets)), targets]
    others = similarity.clone()
    others[torch.arange(len(targets)), targets] = -2.0
    best_other = others.max(-1).values
    return {
        "positive_cosine_median": round(positive.median().item(), 4),
        "positive_cosine_p10": round(positive.quantile(0.1).item(), 4),
        "best_other_cosine_median": round(best_other.median().item(), 4),
        "top1": round((positive > best_other).float().mean().item(), 4),
        "queries": len(targets),
    }
