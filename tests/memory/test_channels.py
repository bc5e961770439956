"""A store of several channels (an imported model's memory layers x key/value heads): one index per
channel over the same rows; a session's reader leaves out the session's own pairs outside the range
its memory layers may read; each stream's first pair (an attention sink) is never searched, through
catch-up, rebuild, refit and snapshots; snapshots and export/import keep every channel."""

import numpy as np
import pytest
import torch
from sqlalchemy import select

from memory.admin import export_ndjson, import_ndjson
from memory.ids import split_ids
from memory.schema import Memory, StreamSession
from memory.store import MemoryStore, Span, delete_memory_rows

DIM, CHANNELS = 8, 3


def pairs(tokens: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((tokens, CHANNELS, DIM)).astype(np.float16)


@pytest.fixture
def store(sessions, make_agent):
    agent = make_agent("a")
    with sessions.begin() as db:
        chat = StreamSession(agent_id=agent, kind="chat")
        db.add(chat)
        db.flush()
        session_id = chat.id
    store = MemoryStore(agent_id=agent, sessions=sessions, head_dim=DIM, channels=CHANNELS, search_openings=False)
    # The session's stream: 3 rows of 10 pairs at positions 0..29.
    store.add_spans([Span(keys=pairs(10, i), values=-pairs(10, i), text=b"t", byte_start=10 * i,
                          byte_end=10 * i + 10, session_id=session_id, token_start=10 * i) for i in range(3)])
    store.session_id = session_id
    return store


def _search_all(reader, channel: int, query: np.ndarray, stream_range=(0, 10**9)):
    queries = torch.from_numpy(query.astype(np.float32))[None, None, None]  # (1, 1, 1, D)
    found, _ = reader.search_channel(channel, queries, 64, stream_range=stream_range)
    return found.ids[found.mask].tolist(), found.keys[found.mask]


def test_each_channel_searches_its_own_keys_of_the_same_rows(store):
    stored = np.concatenate([pairs(10, i) for i in range(3)]).astype(np.float32)  # (30, C, D)
    query = np.random.default_rng(9).standard_normal(DIM)
    for channel in range(CHANNELS):
        ids, keys = _search_all(store.session_reader(None), channel, query)
        assert len(ids) == 29  # all but the stream's opening pair
        best = stored[1:, channel] @ query
        assert torch.equal(keys[0], torch.from_numpy(stored[1 + best.argmax(), channel]))


def _found(store: MemoryStore, channel: int = 0) -> set[tuple[int, int]]:
    ids, _ = _search_all(store.session_reader(None), channel, np.ones(DIM))
    rows, offsets = split_ids(np.array(ids))
    return set(zip(rows.tolist(), offsets.tolist()))


def test_every_streams_first_pair_and_only_it_is_never_searched(store, sessions, tmp_path):
    first, second, _ = sorted(store.view.mirror.row_ids.tolist())
    assert (first, 0) not in _found(store) and len(_found(store)) == 29
    with sessions.begin() as db:
        other = StreamSession(agent_id=store.agent_id, kind="stream")
        db.add(other)
        db.flush()
        other_id = other.id
    # Another stream opens at position 0 too; a later row of it keeps its first pair.
    document = store.add_spans([Span(keys=pairs(5, 7), values=pairs(5, 7), text=b"d", byte_start=0, byte_end=5,
                                     session_id=other_id, token_start=0),
                                Span(keys=pairs(5, 8), values=pairs(5, 8), text=b"e", byte_start=5, byte_end=10,
                                     session_id=other_id, token_start=5)])
    expected = _found(store)
    assert (document[0], 0) not in expected and (document[1], 0) in expected and len(expected) == 29 + 9
    for channel in range(CHANNELS):
        assert _found(store, channel) == expected
    store.rebuild()
    assert _found(store) == expected
    store.views[0].refit()
    assert _found(store) == expected
    store.save_snapshot(tmp_path / "snap")
    restored = MemoryStore(agent_id=store.agent_id, sessions=sessions, head_dim=DIM, channels=CHANNELS,
                           search_openings=False)
    assert restored.load_snapshot(tmp_path / "snap") and _found(restored) == expected
    searching = MemoryStore(agent_id=store.agent_id, sessions=sessions, head_dim=DIM, channels=CHANNELS)
    assert not searching.load_snapshot(tmp_path / "snap")  # a store that searches openings rebuilds instead
    searching.rebuild()
    assert _found(searching) == expected | {(first, 0), (document[0], 0)}
    with sessions.begin() as db:
        delete_memory_rows(db, agent_id=store.agent_id, memory_ids=[first])
    store.catch_up()
    assert (second, 0) in _found(store) and len(_found(store)) == 20 + 9  # a later row is not its stream's opening


def test_a_session_reader_leaves_out_its_own_pairs_outside_the_range_its_layers_read(store):
    own = store.session_reader(store.session_id)
    ids, _ = _search_all(own, 0, np.ones(DIM), stream_range=(4, 25))
    assert len(ids) == 21  # positions 4..24 of 0..29
    other = store.session_reader(store.session_id + 1)
    assert len(_search_all(other, 0, np.ones(DIM), stream_range=(4, 25))[0]) == 29  # all but its opening


def test_snapshot_and_export_keep_every_channel(store, sessions, make_agent, tmp_path):
    store.save_snapshot(tmp_path / "snap")
    restored = MemoryStore(agent_id=store.agent_id, sessions=sessions, head_dim=DIM, channels=CHANNELS,
                           search_openings=False)
    assert restored.load_snapshot(tmp_path / "snap")
    query = np.ones(DIM)
    for channel in range(CHANNELS):
        assert _search_all(restored.session_reader(store.session_id), channel, query, (4, 25))[0] == \
            _search_all(store.session_reader(store.session_id), channel, query, (4, 25))[0]
    single = MemoryStore(agent_id=store.agent_id, sessions=sessions, head_dim=DIM)
    assert not single.load_snapshot(tmp_path / "snap")  # another channel count: rebuilt from SQL instead

    with sessions() as db:
        lines = list(export_ndjson(db, agent_id=store.agent_id))
    copy = MemoryStore(agent_id=make_agent("b"), sessions=sessions, head_dim=DIM, channels=CHANNELS)
    with sessions.begin() as db:
        assert import_ndjson(db, store=copy, lines=lines) == 3
    with sessions() as db:
        originals = db.scalars(select(Memory.keys).where(Memory.agent_id == store.agent_id).order_by(Memory.id)).all()
        copies = db.scalars(select(Memory.keys).where(Memory.agent_id == copy.agent_id).order_by(Memory.id)).all()
    assert originals == copies
    one_channel = MemoryStore(agent_id=copy.agent_id, sessions=sessions, head_dim=DIM)
    with sessions.begin() as db, pytest.raises(ValueError, match="line 1"):
        import_ndjson(db, store=one_channel, lines=lines[:1])
