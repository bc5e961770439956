"""Local (sliding-window) multi-query attention: Griffin's local attention block and the window
it shares with the retrieval block (models.retrieval).

A window keeps the last W keys/values of the stream *without* rotary embedding and
rotates them at use time, relative to the oldest cached token. Attention scores only
depend on position differences, so this equals absolute RoPE while keeping
angles small forever: an infinite session never loses precision to huge
positions.

Letters: B batch, T new tokens, C cached tokens (<= W), S keys, H query heads,
D head dim, N query blocks.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from models.blocks import BlockContext, BlockOutput
from models.config import ModelConfig
from models.layers import Dense

try:  # Optional CUDA kernel; the PyTorch path below gives the same numbers.
    from flash_attn import flash_attn_func as _flash_attn_func
except ImportError:  # pragma: no cover - depends on the machine
    _flash_attn_func = None


class AttentionState(NamedTuple):
    keys: torch.Tensor  # (B, C, D) un-rotated keys of the last C <= W tokens, oldest first
    values: torch.Tensor  # (B, C, D)


@functools.lru_cache(maxsize=32)
def _rope_table(
    length: int, rope_dim: int, max_wavelength: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """sin and cos of every (position, frequency) for positions 0..length-1: (length, rope_dim / 2) each.

    Built outside inference mode, so a table first made while serving can still be used in training.
    """
    with torch.inference_mode(False), torch.no_grad():
        return _build_rope_table(length, rope_dim, max_wavelength, device)


def _build_rope_table(
    length: int, rope_dim: int, max_wavelength: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
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
    sin, cos = (
        sin[start : start + steps].reshape(shape).type_as(x),
        cos[start : start + steps].reshape(shape).type_as(x),
    )
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


class _WindowBlocks(NamedTuple):
    q: torch.Tensor  # (B, N, block * H, D)
    k: torch.Tensor  # (B, N, span, D)
    v: torch.Tensor  # (B, N, span, D)
    mask: torch.Tensor  # (1, N, block * H, span) additive, 0 or -inf


def _window_blocks(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, cached: int, window: int) -> _WindowBlocks:
    """Cut T queries into blocks, each with the slice of span block + window keys it can see.

    The cost of attending block by block is O(T * W), not O(T * (C + T)).
    """
    batch, steps, heads, dim = q.shape
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
        steps=steps,
        cached=cached,
        window=window,
        block=block,
        span=span,
        offset=offset,
        pad=pad,
        heads=heads,
        device=q.device,
    )
    return _WindowBlocks(q_blocks, k_blocks, v_blocks, mask.type_as(q))


def sliding_window_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, cached: int, window: int, scale: float
) -> torch.Tensor:
    """Causal multi-query attention of T new queries over [C cached + T new] keys.

    q: (B, T, H, D); k, v: (B, C + T, D). Query i sees keys i + C - window .. i + C.
    """
    batch, steps, heads, dim = q.shape
    if _flash_attn_func is not None and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16):
        return _flash_attn_func(
            q, k[:, :, None], v[:, :, None], softmax_scale=scale, causal=True, window_size=(window, 0)
        )
    if steps == 1 and cached <= window:
        # Decoding: every cached key is inside the window, so no mask is needed.
        return F.scaled_dot_product_attention(q.transpose(1, 2), k[:, None], v[:, None], scale=scale).transpose(1, 2)
    blocks = _window_blocks(q, k, v, cached=cached, window=window)
    out = F.scaled_dot_product_attention(blocks.q, blocks.k, blocks.v, attn_mask=blocks.mask, scale=scale)
    return out.reshape(batch, -1, heads, dim)[:, :steps]


def sliding_window_attention_lse(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, cached: int, window: int, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """`sliding_window_attention` that also returns each query's log-sum-exp of scores: (B, T, H, D), (B, T, H).

    The log-sum-exp lets another set of scores join the same softmax afterwards.
    """
    batch, steps, heads, dim = q.shape
    if steps == 1 and cached <= window:
        # Decoding: every cached key is inside the window, so the one block needs no mask.
        blocks = _WindowBlocks(q, k[:, None], v[:, None], mask=q.new_zeros(()))
    else:
        blocks = _window_blocks(q, k, v, cached=cached, window=window)
    scores = (blocks.q @ blocks.k.transpose(-1, -2)).float() * scale + blocks.mask.float()  # (B, N, block*H, span)
    lse = scores.logsumexp(dim=-1, keepdim=True)
    out = torch.exp(scores - lse).type_as(q) @ blocks.v
    return out.reshape(batch, -1, heads, dim)[:, :steps], lse.reshape(batch, -1, heads)[:, :steps]


def _append_window(cache: torch.Tensor, new: torch.Tensor, window: int) -> torch.Tensor:
    joined = torch.cat([cache, new.detach().float()], dim=1)
    return joined[:, -window:]


class SlidingWindow:
    """The last W un-rotated keys/values of a stream, and attention of new queries over them.

    Holds no parameters: a block that attends over a window (local attention, the retrieval
    block) holds one beside its own projections.
    """

    def __init__(self, window: int, head_dim: int, rope_max_wavelength: int):
        self.window, self.head_dim, self.rope_max_wavelength = window, head_dim, rope_max_wavelength

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> AttentionState:
        empty = torch.zeros(batch_size, 0, self.head_dim, device=device)
        return AttentionState(keys=empty, values=empty.clone())

    def inputs(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, state: AttentionState
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries and [cached + new] keys rotated relative to the oldest cached token, and the values.

        `state` is any window state: its `keys` and `values` are the cache."""
        cached = state.keys.shape[1]
        keys = apply_rope(torch.cat([state.keys.type_as(k), k], dim=1), 0, self.rope_max_wavelength)
        values = torch.cat([state.values.type_as(v), v], dim=1)
        return apply_rope(q, cached, self.rope_max_wavelength), keys, values

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, state: AttentionState, scale: float
    ) -> torch.Tensor:
        """(B, T, H, D) new queries over the cache and the T new keys (k, v: (B, T, D))."""
        q, keys, values = self.inputs(q, k, v, state)
        return sliding_window_attention(q, keys, values, cached=state.keys.shape[1], window=self.window, scale=scale)

    def attend_with_lse(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, state: AttentionState
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`attend` at scale 1 (the queries carry their scale) with each query's log-sum-exp of scores."""
        q, keys, values = self.inputs(q, k, v, state)
        return sliding_window_attention_lse(q, keys, values, cached=state.keys.shape[1], window=self.window, scale=1.0)

    def advance(self, state: AttentionState, k: torch.Tensor, v: torch.Tensor) -> AttentionState:
        """The window after the new keys and values: the last W of cache and new."""
        return AttentionState(
            keys=_append_window(state.keys, k, self.window), values=_append_window(state.values, v, self.window)
        )


def project_multi_query(
    qkv: Dense, x: torch.Tensor, heads: int, head_dim: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[q | k | v] from one fused projection: (B, T, H, D) queries, one (B, T, D) key and value head."""
    batch, steps, _ = x.shape
    q, k, v = qkv(x).split([heads * head_dim, head_dim, head_dim], dim=-1)
    return q.view(batch, steps, heads, head_dim), k, v


class WindowedMultiQuery(nn.Module):
    """What every block that attends over a window holds: the window, and the fused [q | k | v] and
    output projections (named `qkv` and `out` in checkpoints and weight versions)."""

    def __init__(self, config: ModelConfig, out_init_scale: float):
        super().__init__()
        width, self.heads, self.head_dim = config.width, config.num_heads, config.head_dim
        self.sliding = SlidingWindow(config.attention_window, self.head_dim, config.rope_max_wavelength)
        self.qkv = Dense(width, width + 2 * self.head_dim, bias=False)  # [q | k | v]
        self.out = Dense(width, width, init_scale=out_init_scale)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, T, H, D) queries, (B, T, D) keys and values."""
        return project_multi_query(self.qkv, x, self.heads, self.head_dim)


class LocalAttention(WindowedMultiQuery):
    """Griffin's local attention block: MQA, RoPE on half the features, window W."""

    reads_states: tuple[type, ...] = (AttentionState,)

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> AttentionState:
        return self.sliding.init_state(batch_size, device)

    def forward(self, x: torch.Tensor, state: AttentionState, context: BlockContext) -> BlockOutput:
        q, k, v = self.project(x)
        out = self.sliding.attend(q, k, v, state, scale=self.head_dim**-0.5)  # (B, T, H, D)
        return BlockOutput(self.out(out.flatten(-2)), self.sliding.advance(state, k, v))
