"""The retrieval block's view of an external memory, and an exact in-memory one.

`MemoryReader` is all the model knows of memory: the `memory` package implements
it over SQL + FAISS; `TensorMemory` here is exact brute force over tensors,
used by tests and by training (where memory is a document's own earlier chunks).

Pairs are stored in spans (one `add`, one stored row): the pairs of a span are
consecutive tokens of one stream, so each pair but the last has a successor,
the pair stored right after it. `follow` goes there without a search; the
retrieval block uses it to keep reading along a stored text that has been
predicting correctly (see models.retrieval).

Letters: B batch, T time, H heads, D head dim, K retrieved pairs, M stored pairs.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

import torch


class MemoryKV(NamedTuple):
    """The (key, value) pairs a chunk contributes to the retrieval memory, one per token.

    Pair t is a transition: the key describes the context *before* token t (the
    unit key of token t - 1; zero for a stream's first token) and the value names
    token t. A later query that finds its own context there reads what came next.
    """

    keys: torch.Tensor  # (B, T, D) L2-normalised (or zero), no position information
    values: torch.Tensor  # (B, T, D) the fixed unit code of token t (RetrievalAttention.token_codes)


class RetrievedMemory(NamedTuple):
    keys: torch.Tensor  # (B, T, H, K, D) from `search`; (*ids.shape, D) from `follow`
    values: torch.Tensor  # same shape as keys
    mask: torch.Tensor  # (B, T, H, K) bool: False where fewer than K pairs exist (or nothing follows)
    ids: torch.Tensor  # (B, T, H, K) int64: each pair's id for `follow`, -1 where masked


@runtime_checkable
class MemoryReader(Protocol):
    def search(self, queries: torch.Tensor, top_k: int) -> RetrievedMemory:
        """Top-k stored pairs by inner product for each query. queries: (B, T, H, D)."""
        ...

    def follow(self, ids: torch.Tensor) -> RetrievedMemory:
        """The pair stored right after each pair `ids` (any shape) names, in the same span; masked
        where that pair is gone, was the span's last, or the id is -1 or another reader's."""
        ...


def empty_retrieval(queries: torch.Tensor, top_k: int) -> RetrievedMemory:
    batch, steps, heads, dim = queries.shape
    zeros = queries.new_zeros(batch, steps, heads, top_k, dim)
    nothing = torch.full((batch, steps, heads, top_k), -1, dtype=torch.long, device=queries.device)
    return RetrievedMemory(zeros, zeros, nothing >= 0, nothing)


def nothing_follows(ids: torch.Tensor, dim: int) -> RetrievedMemory:
    """`follow`'s answer from a reader that stores nothing."""
    zeros = torch.zeros(*ids.shape, dim, device=ids.device)
    return RetrievedMemory(zeros, zeros, torch.zeros_like(ids, dtype=torch.bool), torch.full_like(ids, -1))


class TensorMemory:
    """Exact top-k over pairs held as tensors; one shared store for every batch row.

    A pair's id is its position among every pair ever added, so ids survive the capacity's trimming.
    With `one_stream`, each add continues the one before (a stream's chunks, one after another);
    otherwise each add, or each row of it, is a span of its own.
    """

    def __init__(self, dim: int, device: torch.device | str | None = None, capacity: int | None = None,
                 one_stream: bool = False):
        self.keys = torch.zeros(0, dim, device=device)  # (M, D)
        self.values = torch.zeros(0, dim, device=device)
        self.last_of_span = torch.zeros(0, dtype=torch.bool, device=device)  # (M,) nothing follows it
        self.first_id = 0  # id of the oldest pair kept
        self.capacity = capacity  # keep only the newest pairs when set
        self.one_stream = one_stream

    def __len__(self) -> int:
        return self.keys.shape[0]

    def add(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Append pairs; keys/values: (T, D) one span, or (B, T, D) one span per row (e.g. a chunk's MemoryKV)."""
        dim = self.keys.shape[1]
        keys, values = keys.detach().float(), values.detach().float()
        span_length = keys.shape[-2] if keys.dim() > 1 else 1
        keys, values = keys.reshape(-1, dim), values.reshape(-1, dim)
        ends = torch.arange(1, keys.shape[0] + 1, device=keys.device) % span_length == 0
        if self.one_stream:
            if keys.shape[0] != span_length:
                raise ValueError(f"a one-stream memory takes one row at a time, got {keys.shape[0] // span_length}")
            ends[:] = False
        self.keys, self.values = torch.cat([self.keys, keys]), torch.cat([self.values, values])
        self.last_of_span = torch.cat([self.last_of_span, ends.to(self.last_of_span.device)])
        if self.capacity is not None and len(self) > self.capacity:
            self.first_id += len(self) - self.capacity
            self.keys, self.values = self.keys[-self.capacity :], self.values[-self.capacity :]
            self.last_of_span = self.last_of_span[-self.capacity :]

    def tensors(self) -> dict[str, torch.Tensor]:
        """Everything it holds, for a checkpoint (`load_tensors` reads it back)."""
        return {"keys": self.keys, "values": self.values, "last_of_span": self.last_of_span,
                "first_id": torch.tensor([self.first_id])}

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.keys, self.values = tensors["keys"], tensors["values"]
        self.first_id = int(tensors["first_id"][0]) if "first_id" in tensors else 0
        # Saved before spans were kept: follow nothing rather than across spans of unknown length.
        every = torch.ones(len(self), dtype=torch.bool, device=self.keys.device)
        self.last_of_span = tensors.get("last_of_span", every)

    def search(self, queries: torch.Tensor, top_k: int) -> RetrievedMemory:
        if len(self) == 0:
            return empty_retrieval(queries, top_k)
        k = min(top_k, len(self))
        scores = queries.float() @ self.keys.T  # (B, T, H, M)
        idx = scores.topk(k, dim=-1).indices  # (B, T, H, k)
        keys, values = self.keys[idx], self.values[idx]  # (B, T, H, k, D)
        mask = torch.ones(idx.shape, dtype=torch.bool, device=idx.device)
        ids = idx + self.first_id
        if k < top_k:
            pad = (0, 0, 0, top_k - k)
            keys, values = torch.nn.functional.pad(keys, pad), torch.nn.functional.pad(values, pad)
            mask = torch.nn.functional.pad(mask, (0, top_k - k), value=False)
            ids = torch.nn.functional.pad(ids, (0, top_k - k), value=-1)
        return RetrievedMemory(keys, values, mask, ids)

    def follow(self, ids: torch.Tensor) -> RetrievedMemory:
        if len(self) < 2:
            return nothing_follows(ids, self.keys.shape[1])
        position = ids - self.first_id  # the given pairs' rows here
        kept = (ids >= 0) & (position >= 0) & (position + 1 < len(self))
        position = position.clamp(0, len(self) - 2)
        mask = kept & ~self.last_of_span[position]
        following = torch.where(mask, position + 1, 0)
        keys = self.keys[following] * mask[..., None]
        values = self.values[following] * mask[..., None]
        return RetrievedMemory(keys, values, mask, torch.where(mask, following + self.first_id, -1))


class RowMemory:
    """One TensorMemory per batch row: row b only ever retrieves its own pairs (training streams, one per row)."""

    def __init__(self, rows: int, dim: int, capacity: int | None = None, device: torch.device | str | None = None):
        self.rows = [TensorMemory(dim, device=device, capacity=capacity, one_stream=True) for _ in range(rows)]

    def add(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """keys/values: (B, T, D), one row per memory, one span each."""
        for memory, row_keys, row_values in zip(self.rows, keys, values):
            memory.add(row_keys, row_values)

    def search(self, queries: torch.Tensor, top_k: int) -> RetrievedMemory:
        found = [memory.search(queries[b : b + 1], top_k) for b, memory in enumerate(self.rows)]
        return RetrievedMemory(*(torch.cat(parts) for parts in zip(*found)))

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f"{row}.{name}": tensor
                for row, memory in enumerate(self.rows) for name, tensor in memory.tensors().items()}

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        for row, memory in enumerate(self.rows):
            memory.load_tensors({name.split(".", 1)[1]: t for name, t in tensors.items() if name.startswith(f"{row}.")})

    def follow(self, ids: torch.Tensor) -> RetrievedMemory:
        """ids: (B, ...), row b's ids naming row b's pairs."""
        found = [memory.follow(ids[b : b + 1]) for b, memory in enumerate(self.rows)]
        return RetrievedMemory(*(torch.cat(parts) for parts in zip(*found)))
