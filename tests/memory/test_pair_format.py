"""Pair formats (memory.pair_format): what a row keeps, its bytes, and rows of one format read by a store of
another; keys-only stores search and snapshot as others do; older rows re-encode in place (memory.reencode);
exports carry their format."""

import numpy as np
import pytest
import torch
from sqlalchemy import func, select

from memory.admin import export_ndjson, import_ndjson
from memory.index import IndexConfig
from memory.pair_format import FULL_PAIRS, PairFormat, format_for
from memory.reencode import reencode_rows
from memory.schema import Memory
from memory.store import MemoryStore, Span, StoreConfig
from models.transformer_config import TransformerConfig

DIM, CHANNELS = 8, 6
KEYS8 = PairFormat.keys8((0, 1, 2))


def pairs(tokens: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((tokens, CHANNELS, DIM)).astype(np.float32)


def spans(count: int, tokens: int = 10) -> list[Span]:
    return [Span(keys=pairs(tokens, i), values=-pairs(tokens, i), text=f"row {i}".encode(), byte_start=tokens * i,
                 byte_end=tokens * (i + 1)) for i in range(count)]


def store_of(sessions, agent_id: int, pair_format: PairFormat) -> MemoryStore:
    return MemoryStore(agent_id=agent_id, sessions=sessions, head_dim=DIM, channels=CHANNELS, pair_format=pair_format)


def test_keys8_keeps_its_channels_keys_as_int8_codes_within_half_a_step():
    keys = pairs(5, 0)
    blob, values = KEYS8.encode(keys, -keys)
    assert values == b"" and len(blob) == 5 * KEYS8.bytes_per_token(CHANNELS, DIM) == 5 * 3 * (DIM + 2)
    decoded, no_values = KEYS8.decode(blob, values, tokens=5, channels=CHANNELS, head_dim=DIM)
    assert no_values is None and decoded.shape == (5, 3, DIM)
    step = np.abs(keys[:, :3]).max(-1, keepdims=True) / 127
    assert (np.abs(decoded - keys[:, :3]) <= step * 0.5 + 1e-2 * step + 1e-3).all()
    # An fp16 row re-encoded gives the bytes its keys would have given; a subset of channels is cut exactly.
    full = FULL_PAIRS.encode(keys, -keys)
    assert KEYS8.reencode(FULL_PAIRS, *full, tokens=5, channels=CHANNELS, head_dim=DIM) == (blob, values)
    fewer = PairFormat.keys8((2,))
    assert fewer.reencode(KEYS8, blob, values, tokens=5, channels=CHANNELS, head_dim=DIM) == fewer.encode(keys, keys)
    with pytest.raises(ValueError, match="kept less"):
        FULL_PAIRS.reencode(KEYS8, blob, values, tokens=5, channels=CHANNELS, head_dim=DIM)
    with pytest.raises(ValueError, match="do not hold"):
        KEYS8.decode(blob[:-1], b"", tokens=5, channels=CHANNELS, head_dim=DIM)


@pytest.mark.parametrize("name", ["fp8", "keys8:", "keys8:2,1", "keys8:a", "keys8:-1"])
def test_an_unknown_or_malformed_format_is_refused_by_name(name):
    with pytest.raises(ValueError, match=r"format|channels"):
        PairFormat.parse(name)


def test_formats_name_themselves_and_follow_what_reads_values():
    assert PairFormat.parse(None) == PairFormat.parse("fp16") == FULL_PAIRS
    assert PairFormat.parse(KEYS8.name) == KEYS8 and KEYS8.name == "keys8:0,1,2"
    config = TransformerConfig(family="llama", vocab_size=16, width=32, num_heads=4, num_kv_heads=2, head_dim=8,
                               mlp_width=64, sliding_layers=(False,) * 6, memory_layers=(2, 3, 4))
    assert format_for(config, attends=False) == PairFormat.keys8((0, 1, 2, 3))  # the two lowest memory layers
    assert format_for(config, attends=True) == FULL_PAIRS
    assert format_for(config.replace(memory_layers=()), attends=False) == FULL_PAIRS


def test_a_keys_only_store_searches_its_channels_and_finds_nothing_in_the_others(sessions, make_agent):
    store = store_of(sessions, make_agent("a"), KEYS8)
    store.add_spans(spans(3))
    with sessions() as db:
        assert db.scalar(select(func.sum(func.length(Memory.keys) + func.length(Memory.values)))) == 30 * 3 * (DIM + 2)
        assert set(db.scalars(select(Memory.pair_format))) == {"keys8:0,1,2"}
    reader = store.session_reader(None)
    stored = np.concatenate([pairs(10, i) for i in range(3)])
    query = torch.from_numpy(stored[7, 1])[None, None, None]  # the 8th token's own key, channel 1
    found, _ = reader.search_channel(1, query, 4, stream_range=(0, 10**9))
    assert found.mask.all()
    np.testing.assert_allclose(found.keys[0, 0, 0, 0].numpy(), stored[7, 1], atol=0.05)
    assert found.values.abs().sum().item() == 0  # a keys-only store holds no values
    nothing, _ = reader.search_channel(4, query, 4, stream_range=(0, 10**9))
    assert not nothing.mask.any() and (nothing.ids == -1).all() and nothing.keys.shape == found.keys.shape


def test_rows_of_another_format_read_as_if_written_in_the_stores_and_reencode_in_place(sessions, make_agent, tmp_path):
    agent = make_agent("a")
    ids = store_of(sessions, agent, FULL_PAIRS).add_spans(spans(3))  # written before formats: fp16 pairs
    with sessions.begin() as db:  # as migration 0011 leaves them: no format named
        db.execute(Memory.__table__.update().values(pair_format=None))
    written = store_of(sessions, make_agent("b"), KEYS8)
    written.add_spans(spans(3))
    reading = store_of(sessions, agent, KEYS8)
    reading.rebuild()
    for channel in range(3):
        read, wrote = reading.views[channel].mirror, written.views[channel].mirror
        assert np.array_equal(read.live_pairs()[2], wrote.live_pairs()[2]) and len(read.live_pairs()[2]) == 30
        assert np.array_equal(read.codes[:30], wrote.codes[:30]) and np.array_equal(read.scales[:30], wrote.scales[:30])
    before = {row.id: row.text for row in _rows(sessions, agent)}
    assert reencode_rows(reading, batch_rows=2) == 3
    after = _rows(sessions, agent)
    assert {row.id: row.text for row in after} == before and [row.id for row in after] == ids
    assert all(row.pair_format == KEYS8.name and row.values == b"" for row in after)
    assert [row.keys for row in after] == [row.keys for row in _rows(sessions, written.agent_id)]
    assert reencode_rows(reading) == 0  # nothing left to do
    # A store whose values are read cannot use keys-only rows: it leaves them out, once, and says so.
    attending = store_of(sessions, agent, FULL_PAIRS)
    attending.rebuild()
    assert len(attending) == 0 and attending.unreadable == set(ids)
    fresh = attending.add_spans(spans(1))
    assert len(attending) == 10 and attending.unreadable == set(ids) and fresh[0] in attending.view


def _rows(sessions, agent_id: int):
    with sessions() as db:
        return db.execute(select(Memory.id, Memory.text, Memory.keys, Memory.values, Memory.pair_format)
                          .where(Memory.agent_id == agent_id).order_by(Memory.id)).all()


def test_a_keys_only_store_snapshots_and_reopens_as_it_was(sessions, make_agent, tmp_path):
    agent = make_agent("a")
    store = store_of(sessions, agent, KEYS8)
    store.add_spans(spans(3))
    store.save_snapshot(tmp_path / "snap")
    opened = MemoryStore.open(agent_id=agent, sessions=sessions, head_dim=DIM, channels=CHANNELS,
                              snapshot=tmp_path / "snap", pair_format=KEYS8)
    for before, after in zip(store.views, opened.views):
        assert np.array_equal(before.mirror.live_pairs()[2], after.mirror.live_pairs()[2]) and len(after) == 30
        assert np.array_equal(before.mirror.codes[:30], after.mirror.codes[:30])
        assert after.mirror.values.shape[1] == 0 and after.mirror.keys.size == 0  # codes only, no fp16 copy
    # A store of another format ignores the snapshot and reads SQL.
    other = store_of(sessions, agent, PairFormat.keys8((0,)))
    assert not other.load_snapshot(tmp_path / "snap")


def test_exports_carry_their_format_and_import_where_the_store_keeps_no_more(sessions, make_agent):
    source = store_of(sessions, make_agent("a"), KEYS8)
    source.add_spans(spans(2))
    with sessions() as db:
        lines = list(export_ndjson(db, agent_id=source.agent_id))
    assert all('"pair_format": "keys8:0,1,2"' in line for line in lines)
    target = store_of(sessions, make_agent("b"), PairFormat.keys8((1,)))
    with sessions.begin() as db:
        assert import_ndjson(db, store=target, lines=lines) == 2
    target.catch_up()
    assert len(target) == 20
    imported = target.views[0].mirror.live_pairs()[2][:10].astype(np.float32)
    np.testing.assert_allclose(imported, pairs(10, 0)[:, 1], atol=0.05)
    attending = store_of(sessions, make_agent("c"), FULL_PAIRS)
    with pytest.raises(ValueError, match="import line 1: these memories keep keys8:0,1,2"), sessions.begin() as db:
        import_ndjson(db, store=attending, lines=lines)


def test_a_keys_only_serving_store_opened_from_sql_searches_exactly_at_once_and_fits_its_lists_behind(
        sessions, make_agent, held_refit):
    building, release = held_refit
    agent = make_agent("a")
    store_of(sessions, agent, KEYS8).add_spans(spans(30, tokens=40))
    index = IndexConfig(ivf_threshold=500, ivf_lists_per_sqrt=1.0)

    def opened(background: bool) -> MemoryStore:
        return MemoryStore.open(agent_id=agent, sessions=sessions, head_dim=DIM, channels=CHANNELS, pair_format=KEYS8,
                                config=StoreConfig(index=index, background_refit=background))

    serving = opened(background=True)
    assert building.wait(30)  # its inverted lists are being fitted behind, and meanwhile it serves, exactly
    stored = np.concatenate([pairs(40, i) for i in range(30)])
    queries = stored[::97, 2].astype(np.float32)  # some tokens' own keys, channel 2
    for view in serving.views:
        assert view.index.kind == "flat" and len(view.index) == 1_200 and not view.index.reranked
    ids, keys = serving.views[2].mirror.live_searchable()
    exact = ids[np.argsort(-(queries @ keys.astype(np.float32).T), axis=1, kind="stable")[:, :3]]
    assert np.array_equal(serving.views[2].search_ids(queries, 3).ids, exact)
    release.set()
    serving.wait_for_refit(30)
    assert all(view.index.kind == "ivf" and view.index.reranked and len(view.index) == 1_200 for view in serving.views)
    assert all(view.index.kind == "ivf" for view in opened(background=False).views)  # fitted before it serves
