"""Token-level FAISS ids derived from memory row ids: stable, and never reused after deletes."""

from __future__ import annotations

import numpy as np

OFFSET_BITS = 10
MAX_SPAN_TOKENS = 1 << OFFSET_BITS  # a memory row holds at most this many tokens


def token_ids(memory_id: int, num_tokens: int) -> np.ndarray:
    return pair_ids(np.full(num_tokens, memory_id), np.arange(num_tokens, dtype=np.int64))


def id_range(memory_id: int) -> tuple[int, int]:
    """[first, end) of every token id row `memory_id` can own."""
    return memory_id << OFFSET_BITS, (memory_id + 1) << OFFSET_BITS


def split_ids(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(memory row ids, token offsets) of token ids."""
    return ids >> OFFSET_BITS, ids & (MAX_SPAN_TOKENS - 1)


def pair_ids(rows: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Token ids of (memory row id, token offset) pairs."""
    return (rows.astype(np.int64) << OFFSET_BITS) + offsets
