"""The retrieval block's view of an external memory, and an exact in-memory one.

`MemoryReader` is all the model knows of memory: the `memory` package implements
it over SQL + FAISS; `TensorMemory` here is exact brute force over tensors,
used by tests and by training (where memory is a document's own earlier chunks).

Letters: B batch, T time, H heads, D head dim, K retrieved pairs, M stored pairs.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

import torch


class RetrievedMemory(NamedTuple):
    keys: torch.Tensor  # (B, T, H, K, D)
    values: torch.Tensor  # (B, T, H, K, D)
    mask: torch.Tensor  # (B, T, H, K) bool: False where fewer than K pairs exist


@runtime_checkable
class MemoryReader(Protocol):
    def search(self, queries: torch.Tensor, top_k: int) -> RetrievedMemory:
        """Top-k stored pairs by inner product for each query. queries: (B, T, H, D)."""
        ...


def empty_retrieval(queries: torch.Tensor, top_k: int) -> RetrievedMemory:
    batch, steps, heads, dim = queries.shape
    zeros = queries.new_zeros(batch, steps, heads, top_k, dim)
    return RetrievedMemory(zeros, zeros, torch.zeros(batch, steps, heads, top_k, dtype=torch.bool, device=queries.device))


class TensorMemory:
    """Exact top-k over pairs held as tensors; one shared store for every batch row."""

    def __init__(self, dim: int, device: torch.device | str | None = None, capacity: int | None = None):
        self.keys = torch.zeros(0, dim, device=device)  # (M, D)
        self.values = torch.zeros(0, dim, device=device)
        self.capacity = capacity  # keep only the newest pairs when set

    def __len__(self) -> int:
        return self.keys.shape[0]

    def add(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Append pairs; keys/values: (..., D), e.g. a chunk's MemoryKV."""
        dim = self.keys.shape[1]
        self.keys = torch.cat([self.keys, keys.detach().reshape(-1, dim).float()])
        self.values = torch.cat([self.values, values.detach().reshape(-1, dim).float()])
        if self.capacity is not None and len(self) > self.capacity:
            self.keys, self.values = self.keys[-self.capacity :], self.values[-self.capacity :]

    def search(self, queries: torch.Tensor, top_k: int) -> RetrievedMemory:
        if len(self) == 0:
            return empty_retrieval(queries, top_k)
        k = min(top_k, len(self))
        scores = queries.float() @ self.keys.T  # (B, T, H, M)
        idx = scores.topk(k, dim=-1).indices  # (B, T, H, k)
        keys, values = self.keys[idx], self.values[idx]  # (B, T, H, k, D)
        mask = torch.ones(idx.shape, dtype=torch.bool, device=idx.device)
        if k < top_k:
            pad = (0, 0, 0, top_k - k)
            keys, values = torch.nn.functional.pad(keys, pad), torch.nn.functional.pad(values, pad)
            mask = torch.nn.functional.pad(mask, (0, top_k - k), value=False)
        return RetrievedMemory(keys, values, mask)


class RowMemory:
    """One TensorMemory per batch row: row b only ever retrieves its own pairs (training streams)."""

    def __init__(self, rows: int, dim: int, capacity: int | None = None, device: torch.device | str | None = None):
        self.rows = [TensorMemory(dim, device=device, capacity=capacity) for _ in range(rows)]

    def add(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """keys/values: (B, T, D), one row per memory."""
        for memory, row_keys, row_values in zip(self.rows, keys, values):
            memory.add(row_keys, row_values)

    def search(self, queries: torch.Tensor, top_k: int) -> RetrievedMemory:
        found = [memory.search(queries[b : b + 1], top_k) for b, memory in enumerate(self.rows)]
        return RetrievedMemory(*(torch.cat(parts) for parts in zip(*found)))
