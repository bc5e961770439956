"""Serving weights for an imported model on a CPU: int8 for decoding, bf16 for reading prompts (fp32
where the CPU has no bf16 arithmetic).

Decoding one token reads every weight once, so memory bandwidth, not arithmetic, bounds it:
fp32 weights are 4 bytes each, int8 one. Each output column keeps its own scale (absmax / 127),
and the product runs in PyTorch's int8 weight-only kernel with bf16 activations. Reading a prompt
is many rows at once, where arithmetic bounds it and bf16 (AVX-512 BF16 dot products) is about
twice fp32. Both copies together (3 bytes a weight) are smaller than fp32. Figures: BENCHMARKS.md,
"A model that talks". A CPU without bf16 arithmetic (AVX2 only) multiplies bf16 matrices some 75x
slower than fp32 (a first byte took 9 s instead of 0.4), so there the prompts' copy is fp32, 5 bytes
a weight in all (`bf16_products_are_fast`; the int8 kernel for prompts too was 1.6-1.9x slower than
fp32 per product there). BENCHMARKS.md, "Serving on a CPU without bf16 arithmetic". Products that read
the same input are fused (q, k and v; gate and up), and the key/value windows are kept in bf16
(half of each session's state). Attention computes in fp32 while decoding, and in the prompts' type while reading
several tokens with no memory to weigh (BENCHMARKS.md, "Learning at reading speed"). Serving only: learning keeps
fp32 weights.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from models.adapters import adapter_tensors, attach_adapters
from models.cpu import bf16_products_are_fast
from models.layers import Dense
from models.transformer import TransformerLM


def int8_kernel_available() -> bool:
    return hasattr(torch.ops.aten, "_weight_int8pack_mm")


# Rows (tokens) from which a product reads the prompts' copy instead of the int8 weights.
PROMPT_ROWS = 16


class ServingLinear(nn.Module):
    """y = x W for W (in, out): int8 rows (out, in) with one bf16 scale per output for a few rows
    at a time (decoding), a copy of W in `prompt_dtype` for many (prompts)."""

    def __init__(self, weight: torch.Tensor, prompt_dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        rows = weight.detach().float().T.contiguous()  # (out, in)
        scale = rows.abs().amax(dim=1).clamp_min(1e-12) / 127
        self.register_buffer("rows", torch.round(rows / scale[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale.to(torch.bfloat16))
        self.register_buffer("prompt_weight", weight.detach().to(prompt_dtype).contiguous())
        self.adapter: nn.Module | None = None  # learned low-rank change (models.adapters), beside the int8 product

    @torch.no_grad()
    def adapt(self, adapter: nn.Module) -> None:
        """Carry a learned low-rank change (models.adapters): beside the int8 rows, where adding it would round
        it into one int8 step, and merged into the prompts' copy, where computing it beside a product of many
        rows cost 12% of a prompt's time (BENCHMARKS.md, "Serving what an agent learned")."""
        self.adapter = adapter
        merged = self.prompt_weight.float() + adapter.a @ adapter.b * adapter.scale
        self.prompt_weight = merged.to(self.prompt_weight.dtype)  # a new tensor: a shared base copy is never written

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        if flat.shape[0] >= PROMPT_ROWS:
            y = flat.to(self.prompt_weight.dtype) @ self.prompt_weight  # with any adapter merged in
        else:
            y = torch.ops.aten._weight_int8pack_mm(flat.to(torch.bfloat16), self.rows, self.scale)
            if self.adapter is not None:
                y = y.float() + self.adapter(flat)
        return y.to(x.dtype).view(*x.shape[:-1], y.shape[-1])


@torch.no_grad()
def quantize_weights(model: TransformerLM, prompt_dtype: torch.dtype | None = None) -> TransformerLM:
    """`model` with serving projections and output layer, in place (the embedding lookup stays as it
    is); prompts read copies in `prompt_dtype` (default: bf16 where `bf16_products_are_fast`, else fp32).
    ValueError where this PyTorch build lacks the int8 kernel."""
    if not int8_kernel_available():
        raise ValueError("this PyTorch build has no int8 weight-only kernel; serve with fp32 weights")
    if prompt_dtype is None:
        prompt_dtype = torch.bfloat16 if bf16_products_are_fast() else torch.float32
    serving = functools.partial(ServingLinear, prompt_dtype=prompt_dtype)
    adapters = adapter_tensors(model)  # they ride along, fused as their products are
    for layer in model.layers:  # products that read the same input become one (fewer, larger reads)
        attention, mlp = layer.attention, layer.mlp
        attention.qkv = serving(torch.cat([attention.q.weight, attention.k.weight, attention.v.weight], 1))
        mlp.gate_up = serving(torch.cat([mlp.gate.weight, mlp.up.weight], 1))
        del attention.q, attention.k, attention.v, mlp.gate, mlp.up
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Dense) and child.bias is None:
                setattr(parent, name, serving(child.weight))
    model.unembedding = serving(model.embedding.T)
    model.cache_dtype = torch.bfloat16
    for layer in model.layers:  # a prompt's attention too, where its products are bf16: 1.4x a long message's read
        layer.attention.prompt_dtype = None if prompt_dtype == torch.float32 else prompt_dtype
    attach_adapters(model, adapters)
    return model
