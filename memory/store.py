"""MemoryStore: one agent's retrieval memory, SQL first, FAISS as a rebuildable view.

Writes commit to SQL, then enter the index. Every store catches up from SQL
before it searches: rows past its watermark enter, and tombstones past its
tombstone watermark leave. A crash between commit and index update therefore
loses nothing, and a delete in any process reaches every other one.

Letters: B batch, T time, H heads, D head dim, K retrieved pairs.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session, sessionmaker

from memory.codec import decode_pairs, encode_pairs
from memory.ids import MAX_SPAN_TOKENS, id_range, pair_ids, split_ids, token_ids
from memory.index import IndexConfig, VectorIndex
from memory.mirror import PairMirror, RowPlace
from memory.schema import Memory, MemoryTombstone
from models import RetrievedMemory

log = logging.getLogger(__name__)

SNAPSHOT_FORMAT = 2  # 2: rows' places in their streams (format 1 snapshots are rebuilt from SQL)
# What the store reads of a memory row: its pairs, and where its tokens sit in their stream.
ROW_COLUMNS = (Memory.id, Memory.keys, Memory.values, Memory.session_id, Memory.document_id, Memory.imported_from,
               Memory.byte_start, Memory.byte_end)


@dataclass(frozen=True)
class StoreConfig:
    index: IndexConfig = field(default_factory=IndexConfig)
    # Ids below the watermark re-checked on catch-up: rows from transactions that committed out of id order.
    lookback_ids: int = 256
    # Refit the index (IVF training at each doubling: seconds at 1M keys) in a thread while
    # searches use the old one, instead of inside the catch-up that found it due. Serving and
    # learning processes turn it on; evaluations keep it off, so their figures never depend on
    # timing.
    background_refit: bool = False


@dataclass(frozen=True)
class Span:
    """A chunk's (key, value) pairs and where they came from."""

    keys: torch.Tensor | np.ndarray  # (T, D)
    values: torch.Tensor | np.ndarray  # (T, D)
    text: bytes  # the span's bytes
    byte_start: int
    byte_end: int
    event_id: int | None = None
    document_id: int | None = None
    session_id: int | None = None
    weight_version: int = 0
    imported_from: str | None = None


@dataclass(frozen=True)
class SearchResult:
    ids: np.ndarray  # (N, K) token ids, -1 where nothing live was found
    scores: np.ndarray  # (N, K) inner products
    keys: np.ndarray  # (N, K, D) fp16, zero where not live
    values: np.ndarray  # (N, K, D) fp16
    live: np.ndarray  # (N, K) bool

    def as_retrieved(self, queries: torch.Tensor) -> RetrievedMemory:
        """In the model's layout for `queries` of shape (B, T, H, D)."""
        shape = (*queries.shape[:-1], self.ids.shape[1])
        keys = torch.from_numpy(self.keys).reshape(*shape, -1).to(queries.device, torch.float32)
        values = torch.from_numpy(self.values).reshape(*shape, -1).to(queries.device, torch.float32)
        live = torch.from_numpy(self.live).reshape(shape).to(queries.device)
        return RetrievedMemory(keys, values, live, torch.from_numpy(self.ids).reshape(shape).to(queries.device))


def row_place(session_id: int | None, document_id: int | None, imported_from: str | None, byte_start: int,
              byte_end: int) -> RowPlace:
    """A row's place in its stream: a session's (or a document's, or an evaluation's) byte stream;
    imported rows stand alone (their neighbours were not imported with them)."""
    return RowPlace(None if imported_from else (session_id, document_id), byte_start, byte_end)


def display_text(data: bytes) -> str:
    """A span's bytes as text: invalid UTF-8 and NUL (which PostgreSQL text cannot hold) become U+FFFD.
    The bytes themselves stay exact in the event log."""
    return data.decode("utf-8", errors="replace").replace("\x00", "\ufffd")


def flat_queries(queries: torch.Tensor) -> np.ndarray:
    """(B, T, H, D) tensor -> (B*T*H, D) float32 array, FAISS's layout."""
    return queries.detach().reshape(-1, queries.shape[-1]).float().cpu().numpy()


def delete_memory_rows(db: Session, *, agent_id: int, memory_ids: Sequence[int]) -> list[int]:
    """Delete `agent_id`'s rows among `memory_ids` in the caller's transaction; returns the ids deleted.

    Tombstones are written in the same transaction, so once it commits every store
    (in this process or another) drops the rows at its next catch-up, for good.
    """
    owned = list(db.scalars(select(Memory.id).where(Memory.agent_id == agent_id, Memory.id.in_(memory_ids))))
    if owned:
        db.execute(delete(Memory).where(Memory.agent_id == agent_id, Memory.id.in_(owned)))
        db.execute(insert(MemoryTombstone), [{"agent_id": agent_id, "memory_id": i} for i in owned])
    return owned


class MemoryStore:
    """Implements models.MemoryReader for one agent; safe to share between threads."""

    def __init__(self, *, agent_id: int, sessions: sessionmaker[Session], head_dim: int, config: StoreConfig = StoreConfig()):
        self.agent_id = agent_id
        self.sessions = sessions
        self.head_dim = head_dim
        self.config = config
        self.index = VectorIndex(head_dim, config.index)
        self.mirror = PairMirror(head_dim)
        self.memory_watermark = 0  # highest memory id this store has seen
        self.tombstone_watermark = 0  # highest tombstone id this store has applied
        self._lock = threading.RLock()
        # While a background refit runs: the rows added and removed since its snapshot, replayed
        # onto the new index before it replaces the old one; None when no refit is in flight.
        self._refit_journal: list[tuple[bool, int]] | None = None
        self._refit_thread: threading.Thread | None = None
        self._index_generation = 0  # bumped whenever the index is replaced wholesale

    # -- writing -----------------------------------------------------------------------------

    def add_spans(self, spans: Sequence[Span], db: Session | None = None) -> list[int]:
        """Store spans durably and make them searchable; returns their memory ids.

        With `db`, the rows join the caller's transaction and enter the index at the
        next catch-up after it commits; without, they are committed here first.
        """
        rows = [self._row(span) for span in spans]
        if db is not None:
            db.add_all(rows)
            db.flush()
            return [row.id for row in rows]
        with self.sessions.begin() as own:
            own.add_all(rows)
            own.flush()
            ids = [row.id for row in rows]
        self.catch_up()
        return ids

    def _row(self, span: Span) -> Memory:
        count = span.keys.shape[0]
        if not 0 < count <= MAX_SPAN_TOKENS:
            raise ValueError(f"a span holds 1..{MAX_SPAN_TOKENS} tokens, got {count}")
        if tuple(span.keys.shape) != (count, self.head_dim) or tuple(span.values.shape) != (count, self.head_dim):
            raise ValueError(f"keys and values must both be ({count}, {self.head_dim})")
        return Memory(
            agent_id=self.agent_id, event_id=span.event_id, document_id=span.document_id, session_id=span.session_id,
            imported_from=span.imported_from, byte_start=span.byte_start, byte_end=span.byte_end,
            text=display_text(span.text), num_tokens=count, head_dim=self.head_dim,
            keys=encode_pairs(span.keys), values=encode_pairs(span.values), weight_version=span.weight_version,
        )

    # -- catching up ---------------------------------------------------------------------------

    def catch_up(self) -> None:
        """Apply what SQL has and this index lacks: new rows, then tombstones."""
        with self._lock, self.sessions() as db:
            low = max(0, self.memory_watermark - self.config.lookback_ids)
            candidate_ids = db.scalars(
                select(Memory.id).where(Memory.agent_id == self.agent_id, Memory.id > low).order_by(Memory.id)
            ).all()
            # Deleted rows are gone from SQL in the same transaction as their tombstone, and ids
            # are never reused, so anything listed here and not in RAM is new to this store.
            fresh = [i for i in candidate_ids if i not in self.mirror]
            if fresh:
                self._index_rows(db.execute(
                    select(*ROW_COLUMNS).where(Memory.agent_id == self.agent_id, Memory.id.in_(fresh)).order_by(Memory.id)
                ))
            if candidate_ids:
                self.memory_watermark = max(self.memory_watermark, candidate_ids[-1])
            low = max(0, self.tombstone_watermark - self.config.lookback_ids)
            tombstones = db.execute(
                select(MemoryTombstone.id, MemoryTombstone.memory_id)
                .where(MemoryTombstone.agent_id == self.agent_id, MemoryTombstone.id > low)
                .order_by(MemoryTombstone.id)
            ).all()
            for _, memory_id in tombstones:
                self._forget(memory_id)
            if tombstones:
                self.tombstone_watermark = max(self.tombstone_watermark, tombstones[-1][0])
            if self.index.needs_rebuild():
                if self.config.background_refit:
                    self._start_background_refit()
                else:
                    self._refit_index()

    def _index_rows(self, rows) -> None:
        """Rows of ROW_COLUMNS into RAM and the index."""
        for memory_id, key_blob, value_blob, *where in rows:
            keys, values = decode_pairs(key_blob, self.head_dim), decode_pairs(value_blob, self.head_dim)
            self.mirror.add_row(memory_id, keys, values, row_place(*where))
            self.index.add(token_ids(memory_id, keys.shape[0]), keys.astype(np.float32))
            if self._refit_journal is not None:
                self._refit_journal.append((True, memory_id))

    def _forget(self, memory_id: int) -> None:
        if self.mirror.remove_row(memory_id):
            self.index.remove_range(*id_range(memory_id))
            if self._refit_journal is not None:
                self._refit_journal.append((False, memory_id))

    def _live_ids_and_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """Under the lock: what a refit fits, every live pair's FAISS id and key (the mirror compacted first)."""
        self.mirror.compact()
        rows, offsets, keys, _ = self.mirror.live_pairs()
        return pair_ids(rows, offsets), keys.astype(np.float32)

    def _refit_index(self) -> None:
        started = time.perf_counter()
        ids, vectors = self._live_ids_and_vectors()
        self.index.rebuild(ids, vectors)
        log.info("agent %s: index refit as %s over %d keys in %.1fs", self.agent_id, self.index.kind, len(ids),
                 time.perf_counter() - started)

    def _start_background_refit(self) -> None:
        """Under the lock: snapshot the live pairs and fit a new index from them in a thread."""
        if self._refit_journal is not None:
            return  # one is already running
        ids, vectors = self._live_ids_and_vectors()
        self._refit_journal, generation = [], self._index_generation
        self._refit_thread = threading.Thread(target=self._refit_in_background, args=(ids, vectors, generation),
                                              name=f"refit-agent-{self.agent_id}", daemon=True)
        self._refit_thread.start()

    def _refit_in_background(self, ids: np.ndarray, vectors: np.ndarray, generation: int) -> None:
        started = time.perf_counter()
        try:
            index = VectorIndex(self.head_dim, self.config.index)
            index.rebuild(ids, vectors)  # FAISS releases the GIL: searches go on meanwhile
        except Exception:  # noqa: BLE001 - the old index keeps serving; the next catch-up tries again
            log.exception("agent %s: background index refit failed", self.agent_id)
            with self._lock:
                if generation == self._index_generation:
                    self._refit_journal = None
            return
        with self._lock:
            if generation != self._index_generation:
                return  # replaced wholesale meanwhile (rebuild, snapshot): stale, and any journal is a newer refit's
            journal, self._refit_journal = self._refit_journal or [], None
            for added, memory_id in journal:
                keys = self.mirror.row_keys(memory_id) if added else None
                if keys is not None:
                    index.add(token_ids(memory_id, keys.shape[0]), keys.astype(np.float32))
                elif not added:
                    index.remove_range(*id_range(memory_id))
            self.index = index
        log.info("agent %s: index refit in the background as %s over %d keys in %.1fs (%d changes replayed)",
                 self.agent_id, index.kind, len(ids), time.perf_counter() - started, len(journal))

    def wait_for_refit(self, timeout: float | None = None) -> None:
        """Block until a background refit in flight (if any) has replaced the index."""
        thread = self._refit_thread
        if thread is not None:
            thread.join(timeout)

    def _replace_index(self, index: VectorIndex, mirror: PairMirror) -> None:
        """Under the lock: adopt a whole new view; a background refit in flight is dropped."""
        self.index, self.mirror = index, mirror
        self._index_generation += 1
        self._refit_journal = None

    def rebuild(self) -> None:
        """Forget everything in RAM and rebuild the index from SQL alone."""
        with self._lock, self.sessions() as db:
            self._replace_index(VectorIndex(self.head_dim, self.config.index), PairMirror(self.head_dim))
            result = db.execute(
                select(*ROW_COLUMNS).where(Memory.agent_id == self.agent_id).order_by(Memory.id)
                .execution_options(yield_per=256)
            )
            for memory_id, key_blob, value_blob, *where in result:
                self.mirror.add_row(memory_id, decode_pairs(key_blob, self.head_dim),
                                    decode_pairs(value_blob, self.head_dim), row_place(*where))
            self.memory_watermark = int(self.mirror.row_ids[-1]) if len(self.mirror.row_ids) else 0
            last_tombstone = db.scalar(
                select(MemoryTombstone.id).where(MemoryTombstone.agent_id == self.agent_id)
                .order_by(MemoryTombstone.id.desc()).limit(1)
            )
            self.tombstone_watermark = last_tombstone or 0
            self._refit_index()

    # -- searching -----------------------------------------------------------------------------

    def search(self, queries: torch.Tensor, top_k: int) -> RetrievedMemory:
        """Top-k stored pairs by inner product for every query of a chunk. queries: (B, T, H, D)."""
        self.catch_up()
        return self.search_ids(flat_queries(queries), top_k).as_retrieved(queries)

    def search_ids(self, queries: np.ndarray, top_k: int) -> SearchResult:
        """Search without catching up: (N, D) float32 queries -> ids, scores, pairs, liveness, each (N, K)."""
        with self._lock:
            scores, ids = self.index.search(queries, top_k)
            rows, offsets = split_ids(np.maximum(ids, 0))
            slots, live, _ = self.mirror.slots(rows, offsets)
            live &= ids >= 0
            # Pairs stay fp16 in numpy; torch widens them (as_retrieved), much faster than numpy would.
            if live.all():
                keys, values = self.mirror.keys[slots], self.mirror.values[slots]
            else:
                slots = np.where(live, slots, 0)
                keys = np.zeros((*ids.shape, self.head_dim), dtype=np.float16)
                values = np.zeros_like(keys)
                keys[live], values[live] = self.mirror.keys[slots[live]], self.mirror.values[slots[live]]
        return SearchResult(ids=np.where(live, ids, -1), scores=scores, keys=keys, values=values, live=live)

    def follow(self, ids: torch.Tensor) -> RetrievedMemory:
        """The pair stored right after each of `ids` (models.MemoryReader): the next one of its row,
        or the first of the row that continues it in its stream. Reads RAM only."""
        flat = ids.reshape(-1).cpu().numpy()
        rows, offsets = split_ids(np.maximum(flat, 0))
        rows, offsets = rows.copy(), offsets + 1
        keys = np.zeros((len(flat), self.head_dim), dtype=np.float16)
        values = np.zeros_like(keys)
        with self._lock:
            slots, live, row_index = self.mirror.slots(rows, offsets)
            live &= flat >= 0
            if len(self.mirror.row_ids):
                # A row's last pair: continued by the first pair of the row that continues the row, if any.
                ends = (flat >= 0) & (self.mirror.row_ids[row_index] == rows) & (offsets == self.mirror.row_lengths[row_index])
                for i in np.nonzero(ends)[0]:  # few: one pair in a row's length
                    next_row = self.mirror.next_row(int(rows[i]))
                    if next_row is not None:
                        rows[i], offsets[i] = next_row, 0
                        slot, found, _ = self.mirror.slots(rows[i : i + 1], offsets[i : i + 1])
                        slots[i], live[i] = slot[0], found[0]
            keys[live], values[live] = self.mirror.keys[slots[live]], self.mirror.values[slots[live]]
        shape = (*ids.shape, self.head_dim)
        return RetrievedMemory(
            torch.from_numpy(keys).reshape(shape).to(ids.device, torch.float32),
            torch.from_numpy(values).reshape(shape).to(ids.device, torch.float32),
            torch.from_numpy(live).reshape(ids.shape).to(ids.device),
            torch.from_numpy(np.where(live, pair_ids(rows, offsets), -1)).reshape(ids.shape).to(ids.device),
        )

    def __len__(self) -> int:
        return self.mirror.live_tokens

    # -- snapshots -----------------------------------------------------------------------------

    def save_snapshot(self, directory: Path) -> None:
        """Write index bytes, RAM pairs and watermarks atomically (a temp dir renamed into place)."""
        directory = Path(directory)
        tmp = directory.with_name(directory.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        with self._lock:
            rows, offsets, keys, values = self.mirror.live_pairs()
            (tmp / "index.faiss").write_bytes(self.index.to_bytes())
            np.savez(tmp / "pairs.npz", row_ids=self.mirror.row_ids, row_lengths=self.mirror.row_lengths, keys=keys, values=values)
            places = {str(i): [place.stream, place.byte_start, place.byte_end] for i, place in self.mirror.places.items()}
            (tmp / "places.json").write_text(json.dumps(places))
            meta = {
                "format": SNAPSHOT_FORMAT, "agent_id": self.agent_id, "head_dim": self.head_dim,
                "memory_watermark": self.memory_watermark, "tombstone_watermark": self.tombstone_watermark,
                "trained_at": self.index.trained_at,
            }
            (tmp / "meta.json").write_text(json.dumps(meta))
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)

    def load_snapshot(self, directory: Path) -> bool:
        """Adopt a snapshot if it is this agent's and readable; returns False (and keeps RAM empty) if not."""
        directory = Path(directory)
        try:
            meta = json.loads((directory / "meta.json").read_text())
            if meta["format"] != SNAPSHOT_FORMAT or meta["agent_id"] != self.agent_id or meta["head_dim"] != self.head_dim:
                log.warning("snapshot %s does not match agent %s; ignoring it", directory, self.agent_id)
                return False
            pairs = np.load(directory / "pairs.npz")
            places = {int(i): RowPlace(tuple(stream), start, end)
                      for i, (stream, start, end) in json.loads((directory / "places.json").read_text()).items()}
            index = VectorIndex.from_bytes((directory / "index.faiss").read_bytes(), self.head_dim, meta["trained_at"],
                                           self.config.index)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            log.warning("snapshot %s unreadable (%s); rebuilding from SQL instead", directory, exc)
            return False
        mirror = PairMirror(self.head_dim)
        start = 0
        for memory_id, length in zip(pairs["row_ids"].tolist(), pairs["row_lengths"].tolist()):
            mirror.add_row(memory_id, pairs["keys"][start : start + length], pairs["values"][start : start + length],
                           places.get(memory_id))
            start += length
        with self._lock:
            self._replace_index(index, mirror)
            self.memory_watermark, self.tombstone_watermark = meta["memory_watermark"], meta["tombstone_watermark"]
        return True

    @classmethod
    def open(cls, *, agent_id: int, sessions: sessionmaker[Session], head_dim: int,
             snapshot: Path | None = None, config: StoreConfig = StoreConfig()) -> MemoryStore:
        """A caught-up store: from a snapshot plus SQL past it when one is usable, else from SQL alone."""
        store = cls(agent_id=agent_id, sessions=sessions, head_dim=head_dim, config=config)
        if snapshot is None or not store.load_snapshot(snapshot):
            store.rebuild()
        store.catch_up()
        return store
