"""Memory layers: an imported model's global attention over its recent window plus the top-k
(key, value) pairs of everything older, searched in the agent's memory (Memorizing Transformers;
Unlimiformer and InfLLM do this to pretrained models without training).

A memory layer stores, per token, its un-rotated key and its value for each key/value head. Every
memory layer's pairs of one token travel together (one memory row holds them all), each (memory
layer, key/value head) is a *channel*, searched on its own: the query heads that share a key/value
head search that head's keys.

Positions (RoPE). A stored key carries no rotation; the layer rotates it when it attends:
- "window_edge" (the default): every retrieved pair sits where the window's oldest key would, at
  distance min(query position, window - 1) from the query (attention sinks sit there too, see
  models.transformer.Attention). Scores then depend on content alone, never on distances the model
  was not trained on, and one search query per head, the query rotated by that distance, ranks
  stored keys exactly by the score the layer will give them (InfLLM places its memory units the
  same way).
- "exact": pairs of the reading stream at their true positions (others at the window's edge):
  with k = every stored pair this is the model's own full attention over the whole history, the
  test that keeps the approximation honest. Past the trained context it is out of distribution.

Letters: B batch, T new tokens, H query heads, G query heads per key/value head, K top-k,
E head dim, C channels, N stored pairs.
"""

from __future__ import annotations

from typing import Literal, NamedTuple, Protocol, runtime_checkable

import torch

from models.memory import MemoryKV, RetrievedMemory

PositionRule = Literal["window_edge", "exact"]


class Recalled(NamedTuple):
    """What one memory layer weighed from memory, per query head: (B, H, T, K) each."""

    ids: torch.Tensor  # pair ids, -1 where no pair
    weights: torch.Tensor  # each pair's share of the head's attention


@runtime_checkable
class LayerMemoryReader(Protocol):
    def search_channel(self, channel: int, queries: torch.Tensor, top_k: int, *,
                       stream_range: tuple[int, int]) -> tuple[RetrievedMemory, torch.Tensor | None]:
        """Top-k pairs of one channel by inner product with `queries` (B, T, G, E).

        Of the reading stream's own pairs only positions in `stream_range` [lo, hi) may come back:
        the rest are in the layer's state (its sinks below lo, its recent window from hi). Returns
        the pairs, (B, T, G, K, ...) as RetrievedMemory, and each pair's position in the reading
        stream (B, T, G, K), -1 for pairs of other streams; None where positions are not kept.
        """
        ...


def _padded(found: torch.Tensor, top_k: int, value: float | int | bool) -> torch.Tensor:
    """Pad the K axis (dim 3) of (B, T, G, k, ...) up to top_k."""
    missing = top_k - found.shape[3]
    if missing == 0:
        return found
    pad = found.new_full((*found.shape[:3], missing, *found.shape[4:]), value)
    return torch.cat([found, pad], dim=3)


class StreamPairs:
    """Exact memory of one stream's pairs, every channel, with positions (tests, evaluation).

    Feed it each chunk's `ModelOutput.memory_kv` with the stream position of the chunk's first token.
    """

    def __init__(self) -> None:
        self.keys: torch.Tensor | None = None  # (N, C, E)
        self.values: torch.Tensor | None = None
        self.positions = torch.zeros(0, dtype=torch.long)  # (N,)

    def __len__(self) -> int:
        return self.positions.shape[0]

    def add(self, pairs: MemoryKV, start: int) -> None:
        if pairs.keys.shape[0] != 1:
            raise ValueError("StreamPairs holds one stream: give it batch-size-1 pairs")
        keys, values = pairs.keys[0].detach().float(), pairs.values[0].detach().float()
        positions = torch.arange(start, start + keys.shape[0])
        self.keys = keys if self.keys is None else torch.cat([self.keys, keys])
        self.values = values if self.values is None else torch.cat([self.values, values])
        self.positions = torch.cat([self.positions, positions])

    def search_channel(self, channel: int, queries: torch.Tensor, top_k: int, *,
                       stream_range: tuple[int, int]) -> tuple[RetrievedMemory, torch.Tensor | None]:
        batch, steps, group, dim = queries.shape
        lo, hi = stream_range
        eligible = (self.positions >= lo) & (self.positions < hi)
        if self.keys is None or not eligible.any():
            zeros = queries.new_zeros(batch, steps, group, top_k, dim)
            nothing = torch.full((batch, steps, group, top_k), -1, dtype=torch.long, device=queries.device)
            return RetrievedMemory(zeros, zeros.clone(), nothing >= 0, nothing), nothing.clone()
        ids = torch.nonzero(eligible)[:, 0].to(queries.device)
        keys = self.keys[ids, channel].to(queries.device, queries.dtype)  # (M, E)
        values = self.values[ids, channel].to(queries.device, queries.dtype)
        k = min(top_k, ids.shape[0])
        best = (queries @ keys.T).topk(k, dim=-1).indices  # (B, T, G, k)
        found_ids = ids[best]
        positions = self.positions.to(queries.device)[found_ids]
        mask = torch.ones_like(best, dtype=torch.bool)
        found = RetrievedMemory(_padded(keys[best], top_k, 0.0), _padded(values[best], top_k, 0.0),
                                _padded(mask, top_k, False), _padded(found_ids, top_k, -1))
        return found, _padded(positions, top_k, -1)
