"""MemoryStore: exact and approximate search, deletes that stick, crash catch-up, isolation, explicit catch-up."""

import numpy as np
import pytest
import torch
from sqlalchemy import select

from memory.ids import pair_ids
from memory.index import IndexConfig
from memory.schema import Memory
from memory.store import MemoryStore, Span, StoreConfig, delete_memory_rows
from models import HybridLM, ModelConfig

DIM = 16


def unit(rows: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((rows, DIM)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)


def spans(count: int, tokens: int, seed: int, **provenance) -> list[Span]:
    keys = unit(count * tokens, seed)
    values = unit(count * tokens, seed + 1000)
    return [
        Span(keys=keys[i * tokens : (i + 1) * tokens], values=values[i * tokens : (i + 1) * tokens],
             text=f"span {i}".encode(), byte_start=i * tokens, byte_end=(i + 1) * tokens, **provenance)
        for i in range(count)
    ]


def store_for(sessions, agent_id, **config) -> MemoryStore:
    return MemoryStore(agent_id=agent_id, sessions=sessions, head_dim=DIM, config=StoreConfig(**config))


def queries(n: int, seed: int) -> torch.Tensor:
    return torch.from_numpy(unit(n, seed).astype(np.float32)).view(1, n, 1, DIM)


def test_search_equals_exact_brute_force(sessions, make_agent):
    store = store_for(sessions, make_agent("a"))
    written = spans(6, 50, seed=0)
    store.add_spans(written)
    all_keys = np.concatenate([s.keys for s in written]).astype(np.float32)
    all_values = np.concatenate([s.values for s in written]).astype(np.float32)
    q = queries(40, seed=7)
    found = store.search(q, top_k=10)
    scores = q.view(40, DIM).numpy() @ all_keys.T
    best = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    assert found.mask.all()
    np.testing.assert_allclose(found.keys.view(40, 10, DIM).numpy(), all_keys[best], atol=1e-3)
    np.testing.assert_allclose(found.values.view(40, 10, DIM).numpy(), all_values[best], atol=1e-3)


def test_fewer_pairs_than_k_are_masked(sessions, make_agent):
    store = store_for(sessions, make_agent("a"))
    store.add_spans(spans(1, 3, seed=1))
    found = store.search(queries(2, seed=2), top_k=5)
    assert found.mask.sum().item() == 2 * 3
    assert found.keys[~found.mask].abs().sum().item() == 0


def _follow_ids(store, ids) -> list[int]:
    return store.follow(torch.tensor(ids)).ids.tolist()


def test_follow_reads_the_next_pair_along_a_stream_until_it_ends_or_is_deleted(sessions, make_agent, tmp_path):
    store = store_for(sessions, make_agent("a"))
    written = spans(2, 4, seed=3)  # one stream: tokens 0-4 and 4-8
    first, second = store.add_spans(written)
    found = store.search(torch.from_numpy(written[0].keys[:3].astype(np.float32)).view(1, 3, 1, DIM), top_k=1)
    pairs = found.ids[0, :, 0, 0]  # each query is a stored key: pairs 0, 1 and 2 of the first row
    after = store.follow(torch.stack([pairs, torch.tensor([-1, -1, -1])]))  # (2, 3): a second row of nothing
    assert after.ids[0].tolist() == (pairs + 1).tolist() and after.mask[0].all() and not after.mask[1].any()
    np.testing.assert_allclose(after.keys[0].numpy(), written[0].keys[1:4].astype(np.float32), atol=1e-3)
    np.testing.assert_allclose(after.values[0].numpy(), written[0].values[1:4].astype(np.float32), atol=1e-3)
    # A row's last pair is continued by the first of the row whose bytes begin where its own end.
    assert _follow_ids(store, [pair_ids(np.array(first), np.array(3))]) == [pair_ids(np.array(second), np.array(0))]
    assert _follow_ids(store, [pair_ids(np.array(second), np.array(3))]) == [-1]  # the stream's end
    # An imported row stands alone, whatever bytes it names.
    other = store.add_spans([*spans(1, 4, seed=4, session_id=None, imported_from="agent 9 memory 1")])
    assert _follow_ids(store, [pair_ids(np.array(other[0]), np.array(3))]) == [-1]
    store.save_snapshot(tmp_path / "snapshot")
    restored = store_for(sessions, store.agent_id)
    assert restored.load_snapshot(tmp_path / "snapshot")
    assert _follow_ids(restored, [pair_ids(np.array(first), np.array(3))]) == [pair_ids(np.array(second), np.array(0))]
    with sessions.begin() as db:
        delete_memory_rows(db, agent_id=store.agent_id, memory_ids=[second])
    store.catch_up()
    assert _follow_ids(store, [pair_ids(np.array(first), np.array(3))]) == [-1]
    assert _follow_ids(store, [pair_ids(np.array(second), np.array(0))]) == [-1]


@pytest.fixture
def model_keys():
    """Keys and queries of the tiny model's retrieval block over real text (Python's own sources)."""
    import sysconfig
    from pathlib import Path

    torch.manual_seed(0)
    model = HybridLM(ModelConfig.preset("tiny")).eval()
    text = b"".join(p.read_bytes() for p in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))[:40])
    tokens = torch.tensor(list(text[:24_000])).view(1, -1)
    with torch.no_grad():
        kv = model(tokens).memory_kv
    keys = kv.keys[0].numpy().astype(np.float16)
    return keys[:20_000], kv.values[0].numpy().astype(np.float16)[:20_000], keys[20_000:].astype(np.float32)


def test_approximate_recall_at_32_against_exact(sessions, make_agent, model_keys):
    keys, values, held_out = model_keys
    chunk, dim = 500, keys.shape[1]
    store = MemoryStore(agent_id=make_agent("a"), sessions=sessions, head_dim=dim,
                        config=StoreConfig(index=IndexConfig(ivf_threshold=5_000)))
    ids = store.add_spans([
        Span(keys=keys[i : i + chunk], values=values[i : i + chunk], text=b"t", byte_start=i, byte_end=i + chunk)
        for i in range(0, len(keys), chunk)
    ])
    assert store.view.index.kind == "ivf"
    found = store.search_ids(held_out[:1000], 32)
    # Token id -> position in `keys`: rows were written in order, `chunk` tokens each.
    start_of = {row: i * chunk for i, row in enumerate(ids)}
    positions = [{start_of[int(t) >> 10] + (int(t) & 1023) for t in row if t >= 0} for row in found.ids]
    truth = np.argsort(-(held_out[:1000] @ keys.astype(np.float32).T), axis=1)[:, :32]
    recall = np.mean([len(p & set(t.tolist())) / 32 for p, t in zip(positions, truth)])
    assert recall >= 0.9, f"recall@32 {recall:.3f}"


def test_probing_every_list_makes_ivf_search_exact(sessions, make_agent, model_keys):
    keys, values, held_out = model_keys
    store = MemoryStore(agent_id=make_agent("a"), sessions=sessions, head_dim=keys.shape[1],
                        config=StoreConfig(index=IndexConfig(ivf_threshold=5_000, nprobe=1)))
    store.add_spans([Span(keys=keys[i : i + 500], values=values[i : i + 500], text=b"t", byte_start=i, byte_end=i + 500)
                     for i in range(0, len(keys), 500)])
    assert store.view.index.kind == "ivf" and store.view.index.nprobe == 1
    truth = np.sort(held_out[:200] @ keys.astype(np.float32).T, axis=1)[:, ::-1][:, :8]
    one_list = store.search_ids(held_out[:200], 8).scores
    store.view.index.nprobe = store.view.index.lists
    every_list = store.search_ids(held_out[:200], 8).scores
    np.testing.assert_allclose(every_list, truth, atol=1e-4)  # fp16 codes decode with float rounding
    assert (one_list < truth - 1e-3).any()  # one probe alone misses some nearest keys


def test_deleted_rows_never_come_back(sessions, make_agent, tmp_path):
    agent = make_agent("a")
    store = store_for(sessions, agent)
    ids = store.add_spans(spans(4, 20, seed=3))
    snapshot = tmp_path / "snap"
    store.save_snapshot(snapshot)  # taken before the delete
    with sessions.begin() as db:
        assert delete_memory_rows(db, agent_id=agent, memory_ids=[ids[1]]) == [ids[1]]
    deleted_keys = spans(4, 20, seed=3)[1].keys.astype(np.float32)

    def returns_deleted(s: MemoryStore) -> bool:
        s.catch_up()
        found = s.search(torch.from_numpy(deleted_keys).view(1, 20, 1, DIM), top_k=1)
        same = torch.allclose(found.keys.view(20, DIM), torch.from_numpy(deleted_keys), atol=1e-3)
        return bool(found.mask.all() and same)

    assert not returns_deleted(store)  # this process, at its next catch-up
    assert not returns_deleted(MemoryStore.open(agent_id=agent, sessions=sessions, head_dim=DIM, snapshot=snapshot))
    assert not returns_deleted(MemoryStore.open(agent_id=agent, sessions=sessions, head_dim=DIM))
    store.rebuild()
    assert not returns_deleted(store)
    assert len(store) == 3 * 20


def test_catch_up_after_a_crash_between_commit_and_index_update(sessions, make_agent, tmp_path):
    agent = make_agent("a")
    store = store_for(sessions, agent)
    store.add_spans(spans(2, 10, seed=4))
    store.save_snapshot(tmp_path / "snap")
    crashed = spans(1, 10, seed=5)[0]
    with sessions.begin() as db:  # committed by a writer that died before touching any index
        db.add(store._row(crashed))
    assert len(store) == 20
    store.catch_up()
    found = store.search(torch.from_numpy(crashed.keys.astype(np.float32)).view(1, 10, 1, DIM), top_k=1)
    torch.testing.assert_close(
        found.keys.view(10, DIM), torch.from_numpy(crashed.keys.astype(np.float32)), atol=1e-3, rtol=0
    )
    restarted = MemoryStore.open(agent_id=agent, sessions=sessions, head_dim=DIM, snapshot=tmp_path / "snap")
    assert len(restarted) == 30


def test_two_agents_are_isolated(sessions, make_agent):
    a, b = make_agent("a"), make_agent("b")
    store_a, store_b = store_for(sessions, a), store_for(sessions, b)
    store_a.add_spans(spans(2, 10, seed=6))
    b_ids = store_b.add_spans(spans(2, 10, seed=8))
    b_keys = torch.from_numpy(spans(2, 10, seed=8)[0].keys.astype(np.float32)).view(1, 10, 1, DIM)
    found = store_a.search(b_keys, top_k=20)
    a_keys = np.concatenate([s.keys for s in spans(2, 10, seed=6)]).astype(np.float32)
    for key in found.keys.view(-1, DIM)[found.mask.view(-1)].numpy():
        assert np.abs(a_keys - key).sum(axis=1).min() < 1e-2  # every result is one of a's own
    with sessions.begin() as db:
        assert delete_memory_rows(db, agent_id=a, memory_ids=b_ids) == []
    store_b.catch_up()
    assert len(store_b.search(b_keys, 1).mask.nonzero()) == 10


def test_search_sees_what_another_writer_committed_only_after_catch_up(sessions, make_agent):
    agent = make_agent("a")
    reader, writer = store_for(sessions, agent), store_for(sessions, agent)
    kept, added = spans(2, 10, seed=30)
    kept_id = writer.add_spans([kept])[0]
    probe = torch.from_numpy(added.keys.astype(np.float32)).view(1, 10, 1, DIM)
    reader.catch_up()
    assert len(reader) == 10
    added_id = writer.add_spans([added])[0]

    def found_rows() -> set[int]:
        found = reader.search(probe, 1)
        return set((found.ids[found.mask] >> 10).tolist())

    assert found_rows() == {kept_id} and len(reader) == 10  # search reads RAM as it stands: no SQL
    reader.catch_up()
    assert found_rows() == {added_id} and len(reader) == 20
    with sessions.begin() as db:
        delete_memory_rows(db, agent_id=agent, memory_ids=[added_id])
    assert found_rows() == {added_id}  # deleted in SQL, still in this store's RAM until it catches up
    reader.catch_up()
    assert found_rows() == {kept_id} and len(reader) == 10


def test_searching_counts_no_hits(sessions, make_agent):
    # Every search lists its top k, relevant or not: hits are what the learner finds supplied (memory.hits).
    store = store_for(sessions, make_agent("a"))
    ids = store.add_spans(spans(1, 5, seed=9))
    assert store.search(queries(4, seed=10), top_k=2).mask.all()
    with sessions() as db:
        assert db.scalar(select(Memory.hit_count).where(Memory.id == ids[0])) == 0


def test_spans_must_fit_the_store(sessions, make_agent):
    store = store_for(sessions, make_agent("a"))
    with pytest.raises(ValueError, match=r"1\.\.1024 tokens"):
        store.add_spans([Span(keys=np.zeros((0, DIM)), values=np.zeros((0, DIM)), text=b"", byte_start=0, byte_end=0)])
    with pytest.raises(ValueError, match="must both be"):
        store.add_spans([Span(keys=np.zeros((2, DIM)), values=np.zeros((2, 3)), text=b"", byte_start=0, byte_end=0)])


def test_an_empty_store_returns_nothing(sessions, make_agent):
    found = store_for(sessions, make_agent("a")).search(queries(3, seed=11), top_k=4)
    assert not found.mask.any() and found.keys.shape == (1, 3, 1, 4, DIM)


def test_ivf_store_deletes_and_snapshots_like_the_exact_one(sessions, make_agent, tmp_path):
    agent = make_agent("a")
    store = store_for(sessions, agent, index=IndexConfig(ivf_threshold=1_000, ivf_lists_per_sqrt=1.0))
    ids = store.add_spans(spans(30, 100, seed=12))
    assert store.view.index.kind == "ivf"
    target = spans(30, 100, seed=12)[4].keys.astype(np.float32)
    probe = torch.from_numpy(target).view(1, 100, 1, DIM)
    assert store.search(probe, 1).mask.all()
    with sessions.begin() as db:
        delete_memory_rows(db, agent_id=agent, memory_ids=[ids[4]])
    store.catch_up()
    store.save_snapshot(tmp_path / "snap")
    for reopened in (
        store,
        MemoryStore.open(
            agent_id=agent, sessions=sessions, head_dim=DIM, snapshot=tmp_path / "snap", config=store.config
        ),
    ):
        assert reopened.view.index.kind == "ivf" and len(reopened) == 29 * 100
        found = reopened.search(probe, 1)
        assert not torch.allclose(found.keys.view(100, DIM), probe.view(100, DIM), atol=1e-3)


@pytest.mark.parametrize("vectors", [8_193, 17_920, 40_000, 1_000_000])
def test_ivf_lists_never_train_on_fewer_points_than_faiss_wants(vectors):
    from memory.index import MIN_POINTS_PER_LIST, ivf_lists

    lists = ivf_lists(vectors, IndexConfig().ivf_lists_per_sqrt)
    assert lists & (lists - 1) == 0  # a power of two
    assert lists * MIN_POINTS_PER_LIST <= vectors
    assert lists >= min(4 * vectors**0.5, vectors / MIN_POINTS_PER_LIST) / 2  # and not needlessly few


def background_store(sessions, agent) -> MemoryStore:
    return store_for(
        sessions, agent, index=IndexConfig(ivf_threshold=1_000, ivf_lists_per_sqrt=1.0), background_refit=True
    )


def test_a_background_refit_serves_the_old_index_meanwhile_and_misses_no_change(sessions, make_agent, held_refit):
    from memory.ids import split_ids

    building, release = held_refit
    agent = make_agent("a")
    store = background_store(sessions, agent)
    every = spans(16, 100, seed=21)
    first = store.add_spans(every[:12])  # 1,200 keys: past the threshold, so a refit starts
    assert building.wait(30)
    assert store.view.index.kind == "flat"  # the catch-up that found it due did not wait for it
    later = store.add_spans(every[12:])  # rows and deletes while it runs
    with sessions.begin() as db:
        delete_memory_rows(db, agent_id=agent, memory_ids=[first[3], later[1]])
    store.catch_up()
    assert len(store) == 14 * 100 and store.search(queries(4, 5), 2).mask.all()  # still served

    release.set()
    store.wait_for_refit(30)
    assert store.view.index.kind == "ivf" and len(store.view.index) == len(store) == 14 * 100
    store.view.index.nprobe = store.view.index.lists  # every list: the check below is exact
    deleted = {first[3], later[1]}
    for row, span in zip(first + later, every):
        found = store.search_ids(span.keys.astype(np.float32), 1)
        rows, _ = split_ids(np.maximum(found.ids[:, 0], 0))
        if row in deleted:
            assert row not in set(rows[found.live[:, 0]].tolist())
        else:
            assert (rows == row).all() and found.live.all()


def test_a_rebuild_during_a_background_refit_wins(sessions, make_agent, held_refit):
    building, release = held_refit
    store = background_store(sessions, make_agent("a"))
    store.add_spans(spans(12, 100, seed=22))
    assert building.wait(30)
    store.rebuild()  # from SQL, synchronously: the refit in flight was fitted to an older view
    rebuilt = store.view.index
    release.set()
    store.wait_for_refit(30)
    assert store.view.index is rebuilt and rebuilt.kind == "ivf" and len(rebuilt) == 1_200
