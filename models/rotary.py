"""Rotary position embedding (RoPE, rotate-half layout) for the imported transformers: for a run of
positions, for explicit positions, and for a position per element; cos/sin tables cached per size.

Letters: T positions, E head dim.
"""

from __future__ import annotations

import functools

import torch


def rotate(x: torch.Tensor, start: int, base: float) -> torch.Tensor:
    """RoPE in the rotate-half layout for positions start, start+1, ... along dim -2: (..., T, E)."""
    end = start + x.shape[-2]
    if start < 0:  # a young stream's sinks, before the first recent key: rare, computed directly
        return rotate_at(x, torch.arange(start, end, device=x.device), base)
    cos, sin = _table(end, x, base)
    return _rotate_with(x, cos[start:end], sin[start:end])


def rotate_any(x: torch.Tensor, positions: torch.Tensor, base: float) -> torch.Tensor:
    """RoPE (rotate-half) of x (..., E) at positions of x's leading shape (...)."""
    cos, sin = _cos_sin(positions.reshape(-1), x.shape[-1], base, x.dtype)
    shape = (*positions.shape, x.shape[-1])
    return _rotate_with(x, cos.view(shape), sin.view(shape))


@functools.lru_cache(maxsize=64)
def _rope_table(length: int, dim: int, base: float, device: torch.device,
                dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of positions 0..length-1, (length, dim) each, in the rotate-half layout.

    Built outside inference mode, so a table first made while serving can still be used in training."""
    with torch.inference_mode(False), torch.no_grad():
        return _cos_sin(torch.arange(length, device=device), dim, base, dtype)


def _cos_sin(positions: torch.Tensor, dim: int, base: float, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of `positions` (T,), (T, dim) each, in the rotate-half layout."""
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, device=positions.device, dtype=torch.int64).float() / dim))
    angles = positions.float()[:, None] * inv_freq
    return angles.cos().repeat(1, 2).to(dtype), angles.sin().repeat(1, 2).to(dtype)


def _table(length: int, x: torch.Tensor, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    size = 1 << max(10, (length - 1).bit_length())  # a few sizes, reused across steps
    return _rope_table(size, x.shape[-1], base, x.device, x.dtype)


def _rotate_with(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-second, first), dim=-1) * sin


def rotate_at(x: torch.Tensor, positions: torch.Tensor, base: float) -> torch.Tensor:
    """RoPE (rotate-half) for explicit positions (T,) along dim -2 of (..., T, E)."""
    if positions.numel() and int(positions.min()) >= 0:
        cos, sin = _table(int(positions.max()) + 1, x, base)
        return _rotate_with(x, cos[positions], sin[positions])
    return _rotate_with(x, *_cos_sin(positions, x.shape[-1], base, x.dtype))
