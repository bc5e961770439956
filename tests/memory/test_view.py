"""MemoryView (no SQL): search equals brute force over the rows given, removes stick, follow crosses rows,
and refits (synchronous or in the background) keep every row a search can find."""


import numpy as np
import torch

from memory.ids import pair_ids, split_ids
from memory.index import IndexConfig
from memory.mirror import RowPlace
from memory.pair_format import KeyCodes, PairFormat
from memory.view import MemoryView

DIM = 16
SMALL_IVF = IndexConfig(ivf_threshold=1_000, ivf_lists_per_sqrt=1.0)


def unit(rows: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((rows, DIM)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)


def filled(view: MemoryView, rows: int, tokens: int, seed: int, first_id: int = 1) -> list[np.ndarray]:
    """Rows first_id.. of one stream, `tokens` keys each (values: the keys negated); returns their keys."""
    keys = [unit(tokens, seed + i) for i in range(rows)]
    for i, row_keys in enumerate(keys):
        view.add_row(first_id + i, row_keys, -row_keys, RowPlace("stream", i * tokens, (i + 1) * tokens))
    return keys


def found_rows(view: MemoryView, keys: np.ndarray) -> np.ndarray:
    """The row each key's nearest stored pair belongs to (0: nothing found)."""
    found = view.search_ids(keys.astype(np.float32), 1)
    return np.where(found.live[:, 0], split_ids(np.maximum(found.ids[:, 0], 0))[0], 0)


def test_search_equals_brute_force_over_the_rows_given():
    view = MemoryView(DIM, IndexConfig())
    keys = np.concatenate(filled(view, rows=5, tokens=30, seed=0))
    queries = torch.from_numpy(unit(20, seed=99).astype(np.float32)).view(1, 20, 1, DIM)
    found = view.search(queries, top_k=6)
    best = np.argsort(-(queries.view(20, DIM).numpy() @ keys.astype(np.float32).T), axis=1, kind="stable")[:, :6]
    assert found.mask.all() and len(view) == 150
    np.testing.assert_allclose(found.keys.view(20, 6, DIM).numpy(), keys[best].astype(np.float32), atol=1e-3)
    np.testing.assert_allclose(found.values.view(20, 6, DIM).numpy(), -keys[best].astype(np.float32), atol=1e-3)
    assert torch.equal(found.ids.view(20, 6), torch.from_numpy(pair_ids(best // 30 + 1, best % 30)))


def test_a_removed_row_is_never_found_or_followed_into():
    view = MemoryView(DIM, IndexConfig())
    keys = filled(view, rows=3, tokens=10, seed=1)
    assert view.remove_row(2) and not view.remove_row(2) and 2 not in view
    assert len(view) == 20 and (found_rows(view, keys[1]) != 2).all()
    assert (found_rows(view, keys[0]) == 1).all() and (found_rows(view, keys[2]) == 3).all()
    last_of_first = torch.tensor([int(pair_ids(np.array(1), np.array(9)))])
    assert view.follow(last_of_first).ids.tolist() == [-1]  # its continuation is gone


def test_follow_reads_on_into_the_row_that_continues_the_stream():
    view = MemoryView(DIM, IndexConfig())
    keys = filled(view, rows=2, tokens=4, seed=2)
    ids = torch.tensor([[int(pair_ids(np.array(1), np.array(2))), int(pair_ids(np.array(1), np.array(3)))], [-1, -1]])
    after = view.follow(ids)  # (2, 2)
    assert after.ids.tolist() == [[int(pair_ids(np.array(1), np.array(3))), int(pair_ids(np.array(2), np.array(0)))],
                                  [-1, -1]]
    np.testing.assert_allclose(after.keys[0].numpy(), np.stack([keys[0][3], keys[1][0]]).astype(np.float32), atol=1e-3)
    assert not after.mask[1].any() and after.keys[1].abs().sum() == 0


def test_a_synchronous_refit_turns_the_index_ivf_and_still_finds_every_row():
    view = MemoryView(DIM, SMALL_IVF)
    keys = filled(view, rows=12, tokens=100, seed=3)
    assert view.needs_refit() and view.index.kind == "flat"
    view.refit()
    assert not view.needs_refit() and view.index.kind == "ivf" and len(view.index) == len(view) == 1_200
    view.index.nprobe = view.index.lists  # every list: exact
    for row, row_keys in enumerate(keys, start=1):
        assert (found_rows(view, row_keys) == row).all()


def test_a_background_refit_replays_the_rows_added_and_removed_while_it_fitted(held_refit):
    building, release = held_refit
    view = MemoryView(DIM, SMALL_IVF, name="test")
    keys = filled(view, rows=12, tokens=100, seed=4)
    view.refit_in_background()
    assert building.wait(30)
    view.refit_in_background()  # one at a time: this one is a no-op
    keys += filled(view, rows=2, tokens=100, seed=40, first_id=13)
    view.remove_row(3)
    view.remove_row(13)
    assert view.index.kind == "flat" and (found_rows(view, keys[12]) == 13).sum() == 0  # the old index serves
    release.set()
    view.wait_for_refit(30)
    assert view.index.kind == "ivf" and len(view.index) == len(view) == 12 * 100
    view.index.nprobe = view.index.lists
    for row, row_keys in enumerate(keys, start=1):
        rows = found_rows(view, row_keys)
        if row in (3, 13):
            assert not np.isin(rows, [3, 13]).any()
        else:
            assert (rows == row).all()


def test_a_view_replaced_during_a_background_refit_keeps_its_new_index(held_refit):
    building, release = held_refit
    view = MemoryView(DIM, SMALL_IVF)
    filled(view, rows=12, tokens=100, seed=5)
    view.refit_in_background()
    assert building.wait(30)
    view.clear()
    replaced = view.index
    release.set()
    view.wait_for_refit(30)
    assert view.index is replaced and len(view) == len(view.index) == 0


def as_codes(keys: np.ndarray) -> KeyCodes:
    """Keys (T, D) as a keys8 row stores them: int8 codes and a scale per key."""
    one = PairFormat.keys8((0,))
    blob, _ = one.encode(keys[:, None, :], None)
    return one.key_codes(blob, tokens=len(keys), kept=1, head_dim=keys.shape[1])[:, 0]


def test_a_keys_only_view_holds_codes_shortlists_with_four_bits_and_ranks_by_the_keys():
    view = MemoryView(DIM, SMALL_IVF.compact(), values=False)
    codes = [as_codes(unit(100, seed=50 + i)) for i in range(12)]
    for i, row in enumerate(codes):
        view.add_row(i + 1, row, None, RowPlace("stream", i * 100, (i + 1) * 100))
    assert view.mirror.keys.size == 0 and view.mirror.codes.dtype == np.int8  # no fp16 copy of the keys
    view.refit()
    assert view.index.kind == "ivf" and view.index.reranked and view.index.code_bytes == DIM // 2 + 8
    view.index.nprobe = view.index.lists  # every list: what is left to the codes is the shortlist
    keys = np.concatenate([row.decoded() for row in codes])
    queries = unit(40, seed=98).astype(np.float32)
    found = view.search_ids(queries, 5)
    exact = queries @ keys.astype(np.float32).T
    best = np.argsort(-exact, axis=1, kind="stable")[:, :5]
    assert found.live.all()
    # The shortlist (20 of 1,200 by 4-bit codes) holds the exact top 5, and they come back ranked by the keys.
    assert np.array_equal(found.ids, pair_ids(best // 100 + 1, best % 100))
    np.testing.assert_allclose(found.scores, np.take_along_axis(exact, best, 1), atol=2e-3)  # codes x scale
    np.testing.assert_array_equal(found.keys, keys[best])
    assert not found.values.any()
    # A tenth of an fp16 view's bytes per key would be 13; it holds the codes (16 + 2) and its index's (8 + 8).
    assert view.nbytes <= len(view) * (DIM + 2 + DIM // 2 + 8) * 1.5
