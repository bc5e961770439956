"""Snapshots: a round trip restores the view and watermarks exactly; any snapshot that is not this
agent's, of this format and head dim, and whole is ignored, and the store opens from SQL instead."""

import json

import numpy as np
import pytest
import torch

from memory.snapshot import SNAPSHOT_FORMAT, read_snapshot
from memory.store import MemoryStore, Span, StoreConfig

DIM = 8


def stored(sessions, agent: int) -> MemoryStore:
    store = MemoryStore(agent_id=agent, sessions=sessions, head_dim=DIM)
    keys = np.random.default_rng(0).standard_normal((60, DIM)).astype(np.float16)
    store.add_spans([Span(keys=keys[i : i + 20], values=-keys[i : i + 20], text=b"t", byte_start=i, byte_end=i + 20,
                          session_id=None) for i in range(0, 60, 20)])
    return store


def test_a_round_trip_restores_pairs_places_index_and_watermarks(sessions, make_agent, tmp_path):
    store = stored(sessions, make_agent("a"))
    store.save_snapshot(tmp_path / "snap")
    assert not (tmp_path / "snap.tmp").exists()
    snapshot = read_snapshot(tmp_path / "snap", agent_id=store.agent_id, head_dim=DIM, config=store.config.index)
    assert snapshot is not None
    assert (snapshot.memory_watermark, snapshot.tombstone_watermark) == (
        store.memory_watermark,
        store.tombstone_watermark,
    )
    (_, mirror), = snapshot.channels
    assert mirror.places == store.view.mirror.places
    for ours, theirs in zip(mirror.live_pairs(), store.view.mirror.live_pairs()):
        assert np.array_equal(ours, theirs)
    queries = torch.from_numpy(np.random.default_rng(1).standard_normal((1, 5, 1, DIM)).astype(np.float32))
    restored = MemoryStore(agent_id=store.agent_id, sessions=sessions, head_dim=DIM)
    assert restored.load_snapshot(tmp_path / "snap")
    assert all(torch.equal(a, b) for a, b in zip(restored.search(queries, 4), store.search(queries, 4)))


@pytest.mark.parametrize("spoil", ["other agent", "other head dim", "old format", "no index", "garbled meta"])
def test_a_snapshot_that_does_not_fit_is_ignored_and_the_store_opens_from_sql(sessions, make_agent, tmp_path, spoil):
    store = stored(sessions, make_agent("a"))
    store.save_snapshot(tmp_path / "snap")
    meta_path = tmp_path / "snap" / "meta.json"
    meta = json.loads(meta_path.read_text())
    if spoil == "other agent":
        meta["agent_id"] += 1
    elif spoil == "other head dim":
        meta["head_dim"] = 2 * DIM
    elif spoil == "old format":
        meta["format"] = SNAPSHOT_FORMAT - 1
    elif spoil == "no index":
        (tmp_path / "snap" / "index.faiss").unlink()
    meta_path.write_text("{" if spoil == "garbled meta" else json.dumps(meta))
    assert read_snapshot(tmp_path / "snap", agent_id=store.agent_id, head_dim=DIM, config=store.config.index) is None
    fresh = MemoryStore(agent_id=store.agent_id, sessions=sessions, head_dim=DIM)
    assert not fresh.load_snapshot(tmp_path / "snap") and len(fresh) == 0
    reopened = MemoryStore.open(
        agent_id=store.agent_id, sessions=sessions, head_dim=DIM, snapshot=tmp_path / "snap", config=StoreConfig()
    )
    assert len(reopened) == 60 and reopened.memory_watermark == store.memory_watermark
