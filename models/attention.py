"""Local (sliding-window) multi-query attention and the retrieval attention block.

Both keep the last W keys/values of the stream *without* rotary embedding and
rotate at use time, relative to the oldest cached token. Attention scores only
depend on position differences, so this equals absolute RoPE while keeping
angles small forever: an infinite session never loses precision to huge
positions.

Letters: B batch, T new tokens, C cached tokens (<= W), S keys, H query heads,
D head dim, K retrieved pairs, N query blocks.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from models.config import ModelConfig
from models.layers import Dense
from models.memory import MemoryReader

try:  # Optional CUDA kernel; the PyTorch path below gives the same numbers.
    from flash_attn import flash_attn_func as _flash_attn_func
except ImportError:  # pragma: no cover - depends on the machine
    _flash_attn_func = None


def flash_attn_available() -> bool:
    return _flash_attn_func is not None and torch.cuda.is_available()


class AttentionState(NamedTuple):
    keys: torch.Tensor  # (B, C, D) un-rotated keys of the last C <= W tokens, oldest first
    values: torch.Tensor  # (B, C, D)


@functools.lru_cache(maxsize=32)
def _rope_table(length: int, rope_dim: int, max_wavelength: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """sin and cos of every (position, frequency) for positions 0..length-1: (length, rope_dim / 2) each.

    Built outside inference mode, so a table first made while serving can still be used in training.
    """
    with torch.inference_mode(False), torch.no_grad():
        return _build_rope_table(length, rope_dim, max_wavelength, device)


def _build_rope_table(length: int, rope_dim: int, max_wavelength: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    freq_exponents = 2 * torch.arange(rope_dim // 2, device=device, dtype=torch.float32) / rope_dim
    inv_freq = 1.0 / (max_wavelength**freq_exponents)
    angles = torch.arange(length, device=device, dtype=torch.float32)[:, None] * inv_freq
    return torch.sin(angles), torch.cos(angles)


def apply_rope(x: torch.Tensor, start: int, max_wavelength: int) -> torch.Tensor:
    """Rotate the first half of the last dim (Griffin's convention) for positions start, start+1, ...

    x: (B, S, ..., D). Tables are built for a power-of-two length, so a stream reuses a few of them.
    """
    steps, rope_dim = x.shape[1], x.shape[-1] // 2
    length = 1 << (start + steps - 1).bit_length()
    sin, cos = _rope_table(length, rope_dim, max_wavelength, x.device)
    shape = (1, steps, *([1] * (x.dim() - 3)), rope_dim // 2)
    sin, cos = sin[start : start + steps].reshape(shape).type_as(x), cos[start : start + steps].reshape(shape).type_as(x)
    rope_part, passthrough = x.split([rope_dim, x.shape[-1] - rope_dim], dim=-1)
    first, second = rope_part.chunk(2, dim=-1)
    return torch.cat([first * cos - second * sin, second * cos + first * sin, passthrough], dim=-1)


def _window_mask(
    *, steps: int, cached: int, window: int, block: int, span: int, offset: int, pad: int, heads: int, device
) -> torch.Tensor:
    """Which keys each query of each block may see: itself and the `window` keys before it.

    Query i (of the new tokens) sits at key index i + cached; block n holds queries
    [n*block, (n+1)*block) and keys [n*block + offset - pad, ... + span) of the unpadded keys.
    Returns an additive (1, N, block * heads, span) mask, 0 or -inf: a 4-D float mask keeps
    PyTorch on its fused CPU attention kernel. Padded query rows see everything (they are dropped).
    """
    num_blocks = -(-steps // block)
    q = torch.arange(num_blocks * block, device=device).view(num_blocks, block, 1)
    start = torch.arange(num_blocks, device=device).view(num_blocks, 1, 1) * block + offset - pad
    k = start + torch.arange(span, device=device).view(1, 1, span)
    q_pos = q + cached
    mask = (k >= 0) & (k <= q_pos) & (k >= q_pos - window)
    mask |= q >= steps
    additive = torch.zeros(mask.shape, device=device).masked_fill_(~mask, float("-inf"))
    return additive.repeat_interleave(heads, dim=1)[None]


def sliding_window_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, cached: int, window: int, scale: float
) -> torch.Tensor:
    """Causal multi-query attention of T new queries over [C cached + T new] keys.

    q: (B, T, H, D); k, v: (B, C + T, D). Query i sees keys i + C - window .. i + C.
    Work is block-local: blocks of queries attend to a slice of span block + window,
    so the cost is O(T * W), not O(T * (C + T)).
    """
    batch, steps, heads, dim = q.shape
    if _flash_attn_func is not None and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16):
        return _flash_attn_func(
            q, k[:, :, None], v[:, :, None], softmax_scale=scale, causal=True, window_size=(window, 0)
        )
    if steps == 1 and cached <= window:
        # Decoding: every cached key is inside the window, so no mask is needed.
        return F.scaled_dot_product_attention(q.transpose(1, 2), k[:, None], v[:, None], scale=scale).transpose(1, 2)
    block = min(steps, window)  # queries per block
    # No query looks back further than the keys it has, so clamp the window to that.
    window = min(window, cached + steps - 1)
    num_blocks = -(-steps // block)
    span = block + window
    pad = max(0, window - cached)  # zeros on the left so every block's slice exists
    offset = cached - window + pad  # first key of block 0, in padded coordinates
    tail = max(0, offset + (num_blocks - 1) * block + span - (pad + cached + steps))
    k_padded = F.pad(k, (0, 0, pad, tail))  # (B, pad + C + T + tail, D)
    v_padded = F.pad(v, (0, 0, pad, tail))
    k_blocks = k_padded[:, offset:].unfold(1, span, block)[:, :num_blocks].transpose(-1, -2)  # (B, N, span, D)
    v_blocks = v_padded[:, offset:].unfold(1, span, block)[:, :num_blocks].transpose(-1, -2)
    q_blocks = F.pad(q, (0, 0, 0, 0, 0, num_blocks * block - steps))
    # Multi-query: every head shares the one key/value head, so heads become extra query rows.
    q_blocks = q_blocks.reshape(batch, num_blocks, block * heads, dim)  # (B, N, block*H, D)
    mask = _window_mask(
        steps=steps, cached=cached, window=window, block=block, span=span,
        offset=offset, pad=pad, heads=heads, device=q.device,
    )
    out = F.scaled_dot_product_attention(q_blocks, k_blocks, v_blocks, attn_mask=mask.type_as(q), scale=scale)
    return out.reshape(batch, num_blocks * block, heads, dim)[:, :steps]


def _append_window(cache: torch.Tensor, new: torch.Tensor, window: int) -> torch.Tensor:
    joined = torch.cat([cache, new.detach().float()], dim=1)
    return joined[:, -window:]


class LocalAttention(nn.Module):
    """Griffin's local attention block: MQA, RoPE on half the features, window W."""

    def __init__(self, config: ModelConfig, out_init_scale: float):
        super().__init__()
        width, self.heads, self.head_dim = config.width, config.num_heads, config.head_dim
        self.window = config.attention_window
        self.rope_max_wavelength = config.rope_max_wavelength
        self.qkv = Dense(width, width + 2 * self.head_dim, bias=False)  # [q | k | v]
        self.out = Dense(width, width, init_scale=out_init_scale)

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> AttentionState:
        empty = torch.zeros(batch_size, 0, self.head_dim, device=device)
        return AttentionState(keys=empty, values=empty.clone())

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch, steps, _ = x.shape
        q, k, v = self.qkv(x).split([self.heads * self.head_dim, self.head_dim, self.head_dim], dim=-1)
        return q.view(batch, steps, self.heads, self.head_dim), k, v  # (B,T,H,D), (B,T,D), (B,T,D)

    def local_attention(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, state: AttentionState, scale: float
    ) -> torch.Tensor:
        cached = state.keys.shape[1]
        steps = q.shape[1]
        keys = apply_rope(torch.cat([state.keys.type_as(k), k], dim=1), 0, self.rope_max_wavelength)
        values = torch.cat([state.values.type_as(v), v], dim=1)
        q = apply_rope(q, cached, self.rope_max_wavelength)
        return sliding_window_attention(q, keys, values, cached=cached, window=self.window, scale=scale)

    def next_state(self, state: AttentionState, k: torch.Tensor, v: torch.Tensor) -> AttentionState:
        return AttentionState(
            keys=_append_window(state.keys, k, self.window), values=_append_window(state.values, v, self.window)
        )

    def forward(self, x: torch.Tensor, state: AttentionState) -> tuple[torch.Tensor, AttentionState]:
        q, k, v = self.project(x)
        out = self.local_attention(q, k, v, state, scale=self.head_dim**-0.5)  # (B, T, H, D)
        return self.out(out.flatten(-2)), self.next_state(state, k, v)


class MemoryKV(NamedTuple):
    """The (key, value) pairs a chunk contributes to the retrieval memory."""

    keys: torch.Tensor  # (B, T, D) L2-normalised, no position information
    values: torch.Tensor  # (B, T, D)


class RetrievalAttention(LocalAttention):
    """Local attention plus attention over the top-k pairs of an external memory (Memorizing Transformers).

    Queries and keys are L2-normalised and multiplied by a learned per-head scale,
    so local and memory scores live on one scale; retrieved pairs carry no position.
    Output per head: g * memory_out + (1 - g) * local_out, g = sigmoid(gate_bias).
    """

    def __init__(self, config: ModelConfig, out_init_scale: float):
        super().__init__(config, out_init_scale)
        self.top_k = config.memory_top_k
        # log of the score scale; sqrt(D) makes cosine scores as sharp as dot products at init.
        self.log_scale = nn.Parameter(torch.full((self.heads,), 0.5 * math.log(self.head_dim)))
        self.gate_bias = nn.Parameter(torch.zeros(self.heads))
        # Tests and ablations force the gate (e.g. 1.0) without touching the weights.
        self.forced_gate: float | None = None

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, state: AttentionState, memory: MemoryReader | None
    ) -> tuple[torch.Tensor, AttentionState, MemoryKV]:
        q, k, v = self.project(x)
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        scale = self.log_scale.exp().type_as(q)[:, None]  # (H, 1)
        out = self.local_attention(q * scale, k, v, state, scale=1.0)  # (B, T, H, D)
        if memory is not None:
            out = self._mix_memory(q, scale, out, memory)
        return self.out(out.flatten(-2)), self.next_state(state, k, v), MemoryKV(k.detach(), v.detach())

    def _mix_memory(
        self, q: torch.Tensor, scale: torch.Tensor, local_out: torch.Tensor, memory: MemoryReader
    ) -> torch.Tensor:
        found = memory.search(q.detach(), self.top_k)
        keys, values = found.keys.type_as(q), found.values.type_as(q)  # (B, T, H, K, D)
        scores = torch.einsum("bthd,bthkd->bthk", q, keys) * scale  # (B, T, H, K)
        scores = scores.float().masked_fill(~found.mask, float("-inf"))
        any_found = found.mask.any(dim=-1, keepdim=True)  # (B, T, H, 1)
        probs = torch.softmax(scores, dim=-1).nan_to_num(0.0).type_as(q)
        memory_out = torch.einsum("bthk,bthkd->bthd", probs, values)
        gate = self.gate_value().type_as(q)[:, None]  # (H, 1)
        # A query with nothing retrieved keeps its plain local output.
        gate = torch.where(any_found, gate, torch.zeros_like(gate))
        return gate * memory_out + (1.0 - gate) * local_out

    def gate_value(self) -> torch.Tensor:
        if self.forced_gate is not None:
            return torch.full_like(self.gate_bias, self.forced_gate)
        return torch.sigmoid(self.gate_bias)
