"""fp16 (tokens, head_dim) arrays <-> the bytes stored in SQL (little-endian, row-major)."""

from __future__ import annotations

import numpy as np
import torch


def encode_pairs(array: torch.Tensor | np.ndarray) -> bytes:
    if isinstance(array, torch.Tensor):
        array = array.detach().to("cpu", torch.float16).numpy()
    return np.ascontiguousarray(array, dtype="<f2").tobytes()


def decode_pairs(blob: bytes, head_dim: int) -> np.ndarray:
    array = np.frombuffer(blob, dtype="<f2")
    if array.size % head_dim:
        raise ValueError(f"stored pairs of {array.size} values do not divide into rows of {head_dim}")
    return array.reshape(-1, head_dim)
