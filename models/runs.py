"""Tensor helpers for following recalled runs: which earlier pair a pair continues, and sums along runs.

A run is a path of pairs, one per step, each stored right after the one before it (see
models.retrieval). These helpers find links by value and sum along paths without a loop over time.

Letters: B batch, T time, R recalled pairs per step, Q queries, S table entries.
"""

from __future__ import annotations

import math

import torch

# Up to how many (query, table entry) comparisons `first_match` makes them all.
COMPARE_ALL_UP_TO = 1 << 16


def first_match(queries: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """For each of `queries` (..., Q), the first position in `table` (..., S) that holds the same
    value, -1 where none does. A chunk's steps (512 x 160 candidates) are matched by a stable sort
    and a binary search, O(S log S) per row where comparing every pair would cost Q x S; a
    decoding step's few are compared directly, which takes fewer operations."""
    if queries.numel() * table.shape[-1] <= COMPARE_ALL_UP_TO:
        equal = queries[..., :, None] == table[..., None, :]
        return torch.where(equal.any(-1), equal.to(torch.uint8).argmax(-1), -1)
    order = table.argsort(dim=-1, stable=True)  # equal values keep their order: the first comes first
    ordered = table.gather(-1, order)
    at = torch.searchsorted(ordered, queries.contiguous()).clamp(max=table.shape[-1] - 1)
    return torch.where(ordered.gather(-1, at) == queries, order.gather(-1, at), -1)


def run_sums(values: torch.Tensor, carried: torch.Tensor, parent: torch.Tensor) -> torch.Tensor:
    """Each pair's `values` summed along the run of pairs it ends.

    values: (B, T, R) of each step's pairs; carried: (B, R) the sums of the runs the pairs of the
    step before the first end; parent: (B, T, R) the slot among the previous step's pairs that a
    pair continues, -1 where it starts a run. A pair has at most one parent, so runs are paths and
    their sums come from pointer jumping: log2(T) rounds instead of a loop over T.
    """
    batch, steps, slots = values.shape
    zero = values.new_zeros(batch, 1)  # node 0: where every run starts, adding nothing
    sums = torch.cat([zero, carried.type_as(values), values.flatten(1)], dim=1)  # (B, 1 + (T+1)*R)
    first_of_step = 1 + torch.arange(steps, device=values.device).view(1, steps, 1) * slots  # the step before's
    up = torch.where(parent >= 0, first_of_step + parent, 0)  # (B, T, R) node each continues
    up = torch.cat([torch.zeros(batch, 1 + slots, dtype=torch.long, device=up.device), up.flatten(1)], dim=1)
    for _ in range(max(1, math.ceil(math.log2(steps + 1)))):
        sums = sums + sums.gather(1, up)
        up = up.gather(1, up)
    return sums[:, 1 + slots :].view(batch, steps, slots)


def fp16_fingerprint(vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, D) fp16 -> (N,) int64 and int32: the bits of the first two components side by side, and
    the sum of all components' bits (equal vectors, equal sums; exact: D x 2^15 fits in int32)."""
    bits = vectors.contiguous().view(torch.int16)
    first_two = bits[:, :2].long() & 0xFFFF
    return first_two[:, 0] << 16 | first_two[:, 1], bits.sum(-1, dtype=torch.int32)
