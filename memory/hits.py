"""Hit counts: how often each memory supplied the agent's prediction of a token it read.

A memory is hit at a position when its pairs together carry at least `SUPPLIED_SHARE` of the
model's output distribution there (the pointer mixture's copy weight), so a hit is a prediction
the memory made, not a search that merely listed it (every search lists its top k, relevant or
not). Hits are counted by the learner as it reads each event and written in the transaction that
marks the event learned, so every token the agent reads counts once, retries and redeliveries
included.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime

import numpy as np
from sqlalchemy import bindparam, update
from sqlalchemy.orm import Session

from memory.ids import split_ids
from memory.schema import Memory

SUPPLIED_SHARE = 0.5  # a memory counts as used where it carries at least half of the prediction


def rows_supplying(ids: np.ndarray, shares: np.ndarray, min_share: float = SUPPLIED_SHARE) -> Counter[int]:
    """Per memory row, the number of positions where its pairs together carry >= `min_share`.

    ids: (..., K) int64 pair ids per position, -1 for an empty slot; shares: (..., K) each pair's share
    of that position's prediction (models.MemoryPointer.pair_shares).
    """
    ids, shares = ids.reshape(-1, ids.shape[-1]), shares.reshape(-1, shares.shape[-1])
    shares = np.where(ids >= 0, shares, 0.0)
    # Only positions where the memory as a whole carries enough can hold a hit: few, on most text.
    candidates = np.nonzero(shares.sum(-1) >= min_share)[0]
    if not len(candidates):
        return Counter()
    # Per position, sort its pairs by row and sum each row's shares (a run of equal rows); empty slots
    # read as row 0, which no memory has, with no share.
    rows = split_ids(np.maximum(ids[candidates], 0))[0]
    order = np.argsort(rows, axis=1, kind="stable")
    rows, shares = np.take_along_axis(rows, order, 1), np.take_along_axis(shares[candidates], order, 1)
    last = np.ones(rows.shape, dtype=bool)
    last[:, :-1] = rows[:, 1:] != rows[:, :-1]
    first = np.ones(rows.shape, dtype=bool)
    first[:, 1:] = last[:, :-1]
    running = np.cumsum(shares, axis=1)
    # Shares are >= 0, so the running sum before each run's first pair never decreases along a position.
    before_run = np.maximum.accumulate(np.where(first, running - shares, 0.0), axis=1)
    supplied = last & (running - before_run >= min_share)
    return Counter(rows[supplied].tolist())


def record_hits(db: Session, *, agent_id: int, hits: Mapping[int, int]) -> None:
    """Add `hits` (memory id -> count) to the agent's rows in the caller's transaction; rows deleted
    since they were hit are skipped."""
    if not hits:
        return
    statement = (
        update(Memory)
        .where(Memory.id == bindparam("memory_id"), Memory.agent_id == agent_id)
        .values(hit_count=Memory.hit_count + bindparam("hits"), last_hit_at=datetime.now(UTC))
        .execution_options(synchronize_session=False)
    )
    db.connection().execute(statement, [{"memory_id": i, "hits": n} for i, n in sorted(hits.items())])


def remove_hits(db: Session, *, agent_id: int, hits: Mapping[int, int]) -> None:
    """Take `hits` (memory id -> count) back from the agent's rows, as a forget's replay does for the events it
    re-learns or forgets (their hits are counted again, or never); `last_hit_at` stays."""
    if not hits:
        return
    statement = (
        update(Memory)
        .where(Memory.id == bindparam("memory_id"), Memory.agent_id == agent_id)
        .values(hit_count=Memory.hit_count - bindparam("hits"))
        .execution_options(synchronize_session=False)
    )
    db.connection().execute(statement, [{"memory_id": i, "hits": n} for i, n in sorted(hits.items())])
