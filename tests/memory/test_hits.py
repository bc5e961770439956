"""Hit counting: which rows supplied a prediction, and the batched update of their counts."""

from __future__ import annotations

import numpy as np
from sqlalchemy import select

from memory.hits import record_hits, rows_supplying
from memory.ids import pair_ids
from memory.schema import Memory
from tests.memory.test_store import spans, store_for


def row(memory_id: int, offset: int) -> int:
    """The pair id of a row's pair."""
    return int(pair_ids(np.array([memory_id]), np.array([offset]))[0])


def test_a_row_is_hit_where_its_pairs_together_carry_half_the_prediction():
    ids = np.array([
        [row(5, 0), row(5, 1), row(7, 0), -1],  # row 5 carries 0.3 + 0.3; row 7 only 0.2
        [row(7, 3), row(5, 2), -1, -1],  # row 7 alone carries 0.6
        [row(5, 0), row(7, 0), -1, -1],  # the memory carries 0.45 in all: no row can reach half
        [-1, -1, -1, -1],  # nothing was weighed
    ])
    shares = np.array([
        [0.3, 0.3, 0.2, 0.0],
        [0.6, 0.1, 0.0, 0.0],
        [0.25, 0.2, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.0],
    ])
    assert rows_supplying(ids, shares) == {5: 1, 7: 1}
    assert rows_supplying(ids[None], shares[None], min_share=0.19) == {5: 2, 7: 3}  # (B, T, K) works too
    assert rows_supplying(ids[3:], shares[3:]) == {}


def test_hits_add_up_on_the_agent_s_own_rows(sessions, make_agent):
    a, b = make_agent("a"), make_agent("b")
    a_ids = store_for(sessions, a).add_spans(spans(2, 4, seed=1))
    b_ids = store_for(sessions, b).add_spans(spans(1, 4, seed=2))
    for _ in range(2):
        with sessions.begin() as db:
            record_hits(db, agent_id=a, hits={a_ids[0]: 3, b_ids[0]: 5, 10**9: 1})  # b's row and a gone one: skipped
    with sessions() as db:
        counts = dict(db.execute(select(Memory.id, Memory.hit_count)).all())
        assert (counts[a_ids[0]], counts[a_ids[1]], counts[b_ids[0]]) == (6, 0, 0)
        assert db.get(Memory, a_ids[0]).last_hit_at is not None and db.get(Memory, a_ids[1]).last_hit_at is None
