"""What a request has just read, searchable before the worker stores it.

A chunk's (key, value) pairs reach an agent's store only when the worker learns the chunk, and a
model reading a chunk cannot search that chunk's own pairs. So a reply could not recall from the
message it answers: the window would have to copy, and the shipped model copies poorly from it
(a passkey stated 64 bytes before its question: 7 of 20 recalled when the question is read whole,
20 of 20 when its last token is a step of its own searching what came before; see BENCHMARKS.md).
`RecentMemory` is the store's reader plus the pairs of everything the request has read so far.

Letters: B batch, T time, H heads, K retrieved pairs, D head dim.
"""

from __future__ import annotations

import torch

from models import MemoryReader, ModelOutput, RetrievedMemory, TensorMemory

# Ids of recent pairs start here, far above every stored pair's (memory.ids: row id << 10 + offset,
# row ids being SQL's), so the model's following and deduplication never confuse the two.
RECENT_ID_BASE = 1 << 62


class RecentMemory:
    """A MemoryReader over an agent's store and the pairs `remember` was given (one stream, batch 1)."""

    def __init__(self, stored: MemoryReader, head_dim: int):
        self.stored = stored
        self.recent = TensorMemory(head_dim, one_stream=True)  # consecutive reads continue one another

    def remember(self, read: ModelOutput) -> None:
        """Make the pairs of what the model just read (batch 1) searchable: `Generation`'s `on_read`."""
        if read.memory_kv is not None:
            self.recent.add(read.memory_kv.keys[0], read.memory_kv.values[0])

    def search(self, queries: torch.Tensor, top_k: int) -> RetrievedMemory:
        """The best `top_k` by inner product among the store's top k and the recent pairs' top k."""
        found = self.stored.search(queries, top_k)
        if len(self.recent) == 0:
            return found
        recent = self._shifted(self.recent.search(queries, top_k))
        both = RetrievedMemory(*(torch.cat(parts, dim=3) for parts in zip(found, recent)))  # (B, T, H, 2K, ...)
        scores = torch.einsum("bthd,bthkd->bthk", queries.float(), both.keys.float())
        return _chosen(both, scores.masked_fill(~both.mask, float("-inf")).topk(top_k, dim=-1).indices)

    def follow(self, ids: torch.Tensor) -> RetrievedMemory:
        is_recent = ids >= RECENT_ID_BASE
        stored = self.stored.follow(ids.masked_fill(is_recent, -1))
        if not is_recent.any():
            return stored
        recent = self._shifted(self.recent.follow(torch.where(is_recent, ids - RECENT_ID_BASE, -1)))

        def pick(stored_part: torch.Tensor, recent_part: torch.Tensor) -> torch.Tensor:
            where = is_recent if stored_part.dim() == ids.dim() else is_recent[..., None]
            return torch.where(where, recent_part, stored_part)

        return RetrievedMemory(*(pick(a, b) for a, b in zip(stored, recent)))

    @staticmethod
    def _shifted(found: RetrievedMemory) -> RetrievedMemory:
        return found._replace(ids=torch.where(found.mask, found.ids + RECENT_ID_BASE, -1))


def _chosen(found: RetrievedMemory, chosen: torch.Tensor) -> RetrievedMemory:
    """The pairs in slots `chosen` (B, T, H, k) of each query's."""
    def take(part: torch.Tensor) -> torch.Tensor:
        index = chosen if part.dim() == chosen.dim() else chosen[..., None].expand(*chosen.shape, part.shape[-1])
        return part.gather(3, index)

    return RetrievedMemory(*(take(part) for part in found))
