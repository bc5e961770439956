"""Low-rank adapters (LoRA: W + A B, A random, B zero, so a fresh adapter changes nothing) on an imported
model's projections, for measuring them as what learns (`bench.imported_learning --lora-ranks`). Not
served: the service learns norm scales (learner.online), chosen by these measurements."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import parametrize

from models.transformer import TransformerLM

# Every projection of a layer: attention's four, the MLP's three (`models.transformer`).
PROJECTIONS = ("attention.q", "attention.k", "attention.v", "attention.out", "mlp.gate", "mlp.up", "mlp.down")


class LowRankDelta(nn.Module):
    """A parametrization of a (in, out) weight: W + A B * alpha / rank."""

    def __init__(self, in_features: int, out_features: int, rank: int, alpha: float):
        super().__init__()
        self.a = nn.Parameter(torch.randn(in_features, rank) / math.sqrt(in_features))
        self.b = nn.Parameter(torch.zeros(rank, out_features))
        self.scale = alpha / rank

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + (self.a @ self.b) * self.scale


def add_adapters(model: TransformerLM, layers: list[int], rank: int, alpha: float = 16.0) -> dict[str, None]:
    """Adapters of `rank` on every projection of `layers`, in place; returns the learner's masks for them
    (`OnlineLearner(..., masks=)`: the adapters' A and B learn, nothing else)."""
    for layer in layers:
        for path in PROJECTIONS:
            dense = model.layers[layer].get_submodule(path)
            in_features, out_features = dense.weight.shape
            parametrize.register_parametrization(dense, "weight",
                                                 LowRankDelta(in_features, out_features, rank, alpha))
    return {name: None for name, _ in model.named_parameters() if name.endswith((".a", ".b"))
            and ".parametrizations." in name}
