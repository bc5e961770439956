"""Snapshots of a store's view: its index bytes, fp16 pairs, row places and watermarks, in a directory.

A snapshot only saves time: a process opening a store adopts it and catches up from SQL past its
watermarks, instead of decoding every row and refitting the index. So it is written atomically (a
temporary directory renamed into place), and one that is unreadable, of another format, agent or
head dim is ignored, and the store rebuilt from SQL, which stays the truth. The index is stored as
FAISS's own serialized bytes, never pickled.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from memory.index import IndexConfig, VectorIndex
from memory.mirror import PairMirror, RowPlace

if TYPE_CHECKING:
    from memory.store import MemoryStore

log = logging.getLogger(__name__)

SNAPSHOT_FORMAT = 2  # 2: rows' places in their streams (format 1 snapshots are rebuilt from SQL)


@dataclass(frozen=True)
class Snapshot:
    """A snapshot as read back: a view's index and pairs, and how far into SQL they reach."""

    index: VectorIndex
    mirror: PairMirror
    memory_watermark: int  # highest memory id the view had seen
    tombstone_watermark: int  # highest tombstone id it had applied


def save_snapshot(store: MemoryStore, directory: Path) -> None:
    """Write `store`'s index bytes, RAM pairs and watermarks atomically (a temp dir renamed into place)."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    view = store.view
    with view.lock:  # the pairs, the index and the watermarks of one moment
        _, _, keys, values = view.mirror.live_pairs()
        (tmp / "index.faiss").write_bytes(view.index.to_bytes())
        np.savez(tmp / "pairs.npz", row_ids=view.mirror.row_ids, row_lengths=view.mirror.row_lengths, keys=keys,
                 values=values)
        places = {str(i): [place.stream, place.byte_start, place.byte_end] for i, place in view.mirror.places.items()}
        (tmp / "places.json").write_text(json.dumps(places))
        meta = {
            "format": SNAPSHOT_FORMAT, "agent_id": store.agent_id, "head_dim": store.head_dim,
            "memory_watermark": store.memory_watermark, "tombstone_watermark": store.tombstone_watermark,
            "trained_at": view.index.trained_at,
        }
        (tmp / "meta.json").write_text(json.dumps(meta))
    if directory.exists():
        shutil.rmtree(directory)
    os.replace(tmp, directory)


def read_snapshot(directory: Path, *, agent_id: int, head_dim: int, config: IndexConfig) -> Snapshot | None:
    """The snapshot in `directory` if it is `agent_id`'s, of this format and head dim, and readable; else None.
    `config`: the index settings the loaded index searches with (its probes per query)."""
    directory = Path(directory)
    try:
        meta = json.loads((directory / "meta.json").read_text())
        if meta["format"] != SNAPSHOT_FORMAT or meta["agent_id"] != agent_id or meta["head_dim"] != head_dim:
            log.warning("snapshot %s does not match agent %s; ignoring it", directory, agent_id)
            return None
        pairs = np.load(directory / "pairs.npz")
        places = {int(i): RowPlace(tuple(stream), start, end)
                  for i, (stream, start, end) in json.loads((directory / "places.json").read_text()).items()}
        index = VectorIndex.from_bytes((directory / "index.faiss").read_bytes(), head_dim, meta["trained_at"], config)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        log.warning("snapshot %s unreadable (%s); rebuilding from SQL instead", directory, exc)
        return None
    mirror = PairMirror(head_dim)
    start = 0
    for memory_id, length in zip(pairs["row_ids"].tolist(), pairs["row_lengths"].tolist()):
        mirror.add_row(memory_id, pairs["keys"][start : start + length], pairs["values"][start : start + length],
                       places.get(memory_id))
        start += length
    return Snapshot(index, mirror, meta["memory_watermark"], meta["tombstone_watermark"])
