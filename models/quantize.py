"""Int8 weights for decoding an imported model on a CPU.

Decoding one token reads every weight once, so memory bandwidth, not arithmetic, bounds it:
fp32 weights are 4 bytes each, int8 one. Each output column keeps its own scale (absmax / 127),
and the product runs in PyTorch's int8 weight-only kernel with bf16 activations. Measured on
SmolLM2 (BENCHMARKS.md, "A model that talks"): decoding about 1.5x faster, bits per byte +0.15%.
Serving only: learning keeps fp32 weights.
"""

from __future__ import annotations

import torch
from torch import nn

from models.layers import Dense
from models.transformer import TransformerLM


def int8_kernel_available() -> bool:
    return hasattr(torch.ops.aten, "_weight_int8pack_mm")


class Int8Linear(nn.Module):
    """y = x W for W (in, out), stored as int8 rows (out, in) with one bf16 scale per output."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        rows = weight.detach().float().T.contiguous()  # (out, in)
        scale = rows.abs().amax(dim=1).clamp_min(1e-12) / 127
        self.register_buffer("rows", torch.round(rows / scale[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale.to(torch.bfloat16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1]).to(torch.bfloat16)
        y = torch.ops.aten._weight_int8pack_mm(flat, self.rows, self.scale)
        return y.to(x.dtype).view(*x.shape[:-1], y.shape[-1])


@torch.no_grad()
def quantize_weights(model: TransformerLM) -> TransformerLM:
    """`model` with int8 projections and output layer, in place (the embedding lookup stays as it is).
    ValueError where this PyTorch build lacks the int8 kernel."""
    if not int8_kernel_available():
        raise ValueError("this PyTorch build has no int8 weight-only kernel; serve with fp32 weights")
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Dense) and child.bias is None:
                setattr(parent, name, Int8Linear(child.weight))
    model.unembedding = Int8Linear(model.embedding.T)
    return model
