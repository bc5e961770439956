"""Low-rank adapters (LoRA): what an imported model learns online (learner.online, trainable="adapters").

A projection y = x W gains x A B * scale, with A (in, rank) random and B (rank, out) zero, so a new adapter
changes nothing. They sit where nothing computes a stored key or value, so stored memories never go stale:
on every projection of the layers above the last memory layer, or, where no layer is above it (Gemma 3's
last layer is a memory layer), on that layer's query, output and MLP. On SmolLM2 adding those of layer 24 to
layers 25-29 made the gate's exchange degenerate (4 of 6 replies against 0; BENCHMARKS.md, "Serving what an
agent learned"), so they are only the fallback. Adapters were chosen over the norm scales by measurement
(BENCHMARKS.md, "What learns, judged on what the model says").

A is drawn from a generator seeded by the adapter's own name, so every learner of an agent (a worker
after a restart, a forget's replay) starts from the same adapters, bit for bit. Serving carries the
learned A and B beside the int8 weights rather than merged into them (a learned change is about one int8
step of the weights it would be added to), and merged into the prompts' bf16 or fp32 copies, where the
products beside would cost a prompt 12% of its time; the gate probes them exactly as they serve.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping

import torch
from torch import nn

# Every projection of a layer (`models.transformer`): attention's four, the MLP's three.
PROJECTIONS = ("attention.q", "attention.k", "attention.v", "attention.out", "mlp.gate", "mlp.up", "mlp.down")
# Projections that serving fuses into one product (models.quantize), in the order of the fused outputs.
FUSED = {"attention.qkv": ("attention.q", "attention.k", "attention.v"), "mlp.gate_up": ("mlp.gate", "mlp.up")}
# alpha / rank multiplies A B (the LoRA paper's alpha), so a rank's step sizes mean the same at any rank.
ALPHA = 16.0
MARKER = ".adapter."


class LowRankAdapter(nn.Module):
    """x -> x A B * scale: the change an adapter makes to its projection's output."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor, scale: float):
        super().__init__()
        self.a = nn.Parameter(a)
        self.b = nn.Parameter(b)
        self.scale = scale

    @classmethod
    def new(cls, name: str, in_features: int, out_features: int, rank: int) -> LowRankAdapter:
        """A fresh adapter for the projection `name`: A drawn from a generator seeded by the name, B zero."""
        generator = torch.Generator().manual_seed(zlib.crc32(name.encode()))
        a = torch.randn(in_features, rank, generator=generator) / math.sqrt(in_features)
        return cls(a, torch.zeros(rank, out_features), ALPHA / rank)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.to(self.a.dtype) @ self.a) @ self.b * self.scale


def add_adapters(model: nn.Module, projections: list[str], rank: int) -> list[str]:
    """Fresh adapters of `rank` on the `projections` named ("layers.3.attention.q"; a model whose projections
    are `Dense`: as it learns, not as it serves), in place; returns their parameters' names."""
    if rank < 1:
        raise ValueError(f"an adapter's rank must be 1 or more, got {rank}")
    for name in projections:
        dense = model.get_submodule(name)
        dense.adapter = LowRankAdapter.new(name, *dense.weight.shape, rank)
    return [name for name, _ in model.named_parameters() if MARKER in name]


def adapter_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's adapters' A and B by parameter name ({} without adapters)."""
    return {name: p.detach() for name, p in model.named_parameters() if MARKER in name}


def is_adapter(name: str) -> bool:
    return MARKER in name


@torch.no_grad()
def attach_adapters(model: nn.Module, tensors: Mapping[str, torch.Tensor]) -> None:
    """Set the adapters named in `tensors` (`adapter_tensors`' form) on `model`, in place, whether its
    projections are separate (`Dense`, as it learns) or fused (as it serves: one adapter per fused product,
    A side by side and B block-diagonal, zeros for a part without one, which computes exactly the separate
    ones' outputs)."""
    adapters: dict[str, LowRankAdapter] = {}
    for name in tensors:
        if not name.endswith(MARKER + "a"):
            continue
        path = name.removesuffix(MARKER + "a")
        b = tensors.get(path + MARKER + "b")
        if b is None:
            raise ValueError(f"adapter {path} has A but no B")
        a = tensors[name]
        adapters[path] = LowRankAdapter(a.clone(), b.clone(), ALPHA / a.shape[1])
    for path, adapter in adapters.items():
        if _has(model, path):
            _set(model.get_submodule(path), adapter)
    for layer_path in sorted({path.rsplit(".", 2)[0] for path in adapters}):
        for fused, parts in FUSED.items():
            found = {part: adapters.get(f"{layer_path}.{part}") for part in parts}
            if _has(model, f"{layer_path}.{fused}") and any(adapter is not None for adapter in found.values()):
                _set(model.get_submodule(f"{layer_path}.{fused}"), _fused(found, _widths(model.config)))
    missing = [path for path in adapters if not _has(model, path) and not _fused_into(model, path)]
    if missing:
        raise ValueError(f"adapters name projections this model lacks: {missing[:5]}")


def _set(projection: nn.Module, adapter: LowRankAdapter) -> None:
    """A serving product takes it its own way (models.quantize.ServingLinear.adapt); a `Dense` adds it."""
    if hasattr(projection, "adapt"):
        projection.adapt(adapter)
    else:
        projection.adapter = adapter


def _widths(config) -> dict[str, int]:
    """Each fusable projection's output width (a `TransformerConfig`)."""
    query, key_value = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
    return {"attention.q": query, "attention.k": key_value, "attention.v": key_value,
            "mlp.gate": config.mlp_width, "mlp.up": config.mlp_width}


def _fused(found: dict[str, LowRankAdapter | None], widths: dict[str, int]) -> LowRankAdapter:
    """One adapter computing, side by side, the outputs of the adapters `found` for a fused product's parts
    (zeros where a part has none): A side by side, B block by block."""
    present = [adapter for adapter in found.values() if adapter is not None]
    a = torch.cat([adapter.a for adapter in present], 1)
    b = torch.zeros(a.shape[1], sum(widths[part] for part in found), dtype=a.dtype)
    row = column = 0
    for part, adapter in found.items():
        if adapter is not None:
            rank = adapter.a.shape[1]
            b[row : row + rank, column : column + widths[part]] = adapter.b * adapter.scale
            row += rank
        column += widths[part]
    return LowRankAdapter(a, b, 1.0)


def _has(model: nn.Module, path: str) -> bool:
    try:
        model.get_submodule(path)
    except AttributeError:
        return False
    return True


def _fused_into(model: nn.Module, path: str) -> bool:
    layer_path, _, projection = path.rpartition(".")
    layer_path, _, block = layer_path.rpartition(".")
    return any(f"{block}.{projection}" in parts and _has(model, f"{layer_path}.{fused}")
               for fused, parts in FUSED.items())
