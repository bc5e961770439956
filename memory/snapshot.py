"""Snapshots of a store's view: its index bytes, pairs (a keys-only store's keys as codes, memory.mirror), row
places and watermarks, in a directory.

A snapshot only saves time: a process opening a store adopts it and catches up from SQL past its
watermarks, instead of decoding every row and refitting the index. So it is written atomically (a
temporary directory renamed into place), and one that is unreadable, of another format, agent or
head dim or pair format is ignored, and the store rebuilt from SQL, which stays the truth. The index is stored as
FAISS's own serialized bytes, never pickled.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from memory.index import IndexConfig, VectorIndex
from memory.mirror import PairMirror, RowPlace
from memory.pair_format import FULL_PAIRS, PairFormat

log = logging.getLogger(__name__)

# 2: rows' places in their streams; 3: their token positions, and one index per channel; 4: whether
# streams' first pairs are indexed (memory.mirror); 5: the store's pair format, one index per channel it
# keeps (memory.pair_format); 6: a keys-only store's keys as their int8 codes and scales, and its indexes' codes
# (memory.index). Older snapshots are rebuilt from SQL.
SNAPSHOT_FORMAT = 6


@dataclass(frozen=True)
class Snapshot:
    """A snapshot as read back: a view's index and pairs, and how far into SQL they reach."""

    channels: list[tuple[VectorIndex, PairMirror]]  # per channel kept, its index and pairs
    memory_watermark: int  # highest memory id the view had seen
    tombstone_watermark: int  # highest tombstone id it had applied


class SnapshotView(Protocol):
    lock: threading.RLock
    index: VectorIndex
    mirror: PairMirror


class SnapshotSource(Protocol):
    """What a snapshot saves of a store (`memory.store.MemoryStore`): its views, and how far into SQL they reach."""

    agent_id: int
    head_dim: int
    channels: int
    pair_format: PairFormat
    search_openings: bool
    memory_watermark: int
    tombstone_watermark: int
    views: Sequence[SnapshotView]
    view: SnapshotView  # the first channel's: it holds the store's lock and its rows' places


def save_snapshot(store: SnapshotSource, directory: Path) -> None:
    """Write `store`'s index bytes, RAM pairs and watermarks atomically (a temp dir renamed into place)."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with store.view.lock:  # the pairs, the indexes and the watermarks of one moment
        for channel, view in enumerate(store.views):
            with view.lock:
                _, _, slots = view.mirror.live_slots()
                (tmp / _name("index", channel, "faiss")).write_bytes(view.index.to_bytes())
                np.savez(tmp / _name("pairs", channel, "npz"), row_ids=view.mirror.row_ids,
                         row_lengths=view.mirror.row_lengths, **view.mirror.stored(slots))
        places = {str(i): [place.stream, place.byte_start, place.byte_end, place.token_start]
                  for i, place in store.view.mirror.places.items()}
        (tmp / "places.json").write_text(json.dumps(places))
        meta = {
            "format": SNAPSHOT_FORMAT, "agent_id": store.agent_id, "head_dim": store.head_dim,
            "channels": store.channels, "pair_format": store.pair_format.name,
            "search_openings": store.search_openings,
            "memory_watermark": store.memory_watermark,
            "tombstone_watermark": store.tombstone_watermark,
            "trained_at": [view.index.trained_at for view in store.views],
        }
        (tmp / "meta.json").write_text(json.dumps(meta))
    if directory.exists():
        shutil.rmtree(directory)
    os.replace(tmp, directory)


def _name(stem: str, channel: int, suffix: str) -> str:
    return f"{stem}.{suffix}" if channel == 0 else f"{stem}-{channel}.{suffix}"


def read_snapshot(directory: Path, *, agent_id: int, head_dim: int, config: IndexConfig,
                  channels: int = 1, search_openings: bool = True,
                  pair_format: PairFormat = FULL_PAIRS) -> Snapshot | None:
    """The snapshot in `directory` if it is `agent_id`'s, of this format, head dim, channels and pair format, and
    readable; else None. `config`: the index settings the loaded indexes search with (their probes per query)."""
    directory = Path(directory)
    try:
        meta = json.loads((directory / "meta.json").read_text())
        if (meta["format"] != SNAPSHOT_FORMAT or meta["agent_id"] != agent_id or meta["head_dim"] != head_dim
                or meta["channels"] != channels or meta["search_openings"] != search_openings
                or meta["pair_format"] != pair_format.name):
            log.warning("snapshot %s does not match agent %s; ignoring it", directory, agent_id)
            return None
        places = {int(i): RowPlace(tuple(stream) if stream is not None else None, start, end, token_start)
                  for i, (stream, start, end, token_start)
                  in json.loads((directory / "places.json").read_text()).items()}
        read = []
        for channel in range(len(pair_format.kept(channels))):
            pairs = np.load(directory / _name("pairs", channel, "npz"))
            index = VectorIndex.from_bytes((directory / _name("index", channel, "faiss")).read_bytes(), head_dim,
                                           meta["trained_at"][channel], config)
            mirror = PairMirror(head_dim, search_openings=search_openings, values=not pair_format.keys_only)
            read.append((index, _mirror(pairs, places, mirror)))
    except (OSError, ValueError, KeyError, RuntimeError, IndexError, TypeError) as exc:
        log.warning("snapshot %s unreadable (%s); rebuilding from SQL instead", directory, exc)
        return None
    return Snapshot(read, meta["memory_watermark"], meta["tombstone_watermark"])


def _mirror(pairs: np.lib.npyio.NpzFile, places: dict[int, RowPlace], mirror: PairMirror) -> PairMirror:
    arrays = {name: pairs[name] for name in pairs.files if name not in ("row_ids", "row_lengths")}
    start = 0
    for memory_id, length in zip(pairs["row_ids"].tolist(), pairs["row_lengths"].tolist()):
        mirror.add_stored(memory_id, {name: array[start : start + length] for name, array in arrays.items()},
                          places.get(memory_id))
        start += length
    return mirror
