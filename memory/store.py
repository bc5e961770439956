"""MemoryStore: one agent's retrieval memory, SQL first, its RAM view (memory.view) rebuildable from it.

Writes commit to SQL, then enter the view. A store catches up from SQL when its owner asks
(`catch_up()`: once per serving request, once per learning batch): rows past its watermark enter
the view, and tombstones past its tombstone watermark leave it. Search reads the view alone, so a
chunk's search costs no SQL round trip. A crash between commit and view update therefore loses
nothing, and a delete in any process reaches every other one at its next catch-up.

Letters: T time (a span's tokens), D head dim.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session, sessionmaker

from memory.db import lock_agent
from memory.ids import MAX_SPAN_TOKENS
from memory.index import IndexConfig
from memory.mirror import RowPlace
from memory.pair_format import FULL_PAIRS, KeyCodes, PairFormat
from memory.schema import Memory, MemoryTombstone
from memory.snapshot import SNAPSHOT_FORMAT, read_snapshot, save_snapshot
from memory.view import MemoryView, SearchResult, flat_queries
from models import LanguageModel, RetrievedMemory
from models.memory import empty_retrieval

__all__ = [
    "ROW_COLUMNS",
    "SNAPSHOT_FORMAT",
    "MemoryStore",
    "SearchResult",
    "SessionReader",
    "Span",
    "StoreConfig",
    "delete_memory_rows",
    "display_text",
    "flat_queries",
    "memory_for",
    "row_place",
]

log = logging.getLogger(__name__)

# What the store reads of a memory row: its pairs and their format, and where its tokens sit in their stream.
ROW_COLUMNS = (Memory.id, Memory.keys, Memory.values, Memory.pair_format, Memory.num_tokens, Memory.session_id,
               Memory.document_id, Memory.imported_from, Memory.byte_start, Memory.byte_end, Memory.token_start)
# Rows a rebuild reads from SQL per round trip.
REBUILD_BATCH_ROWS = 256


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

    @classmethod
    def serving(cls, nprobe: int | None = None) -> StoreConfig:
        """How the service's processes open an agent's store: refits in the background, `nprobe` lists probed by
        every kind of index (None: each kind's default, IndexConfig)."""
        index = IndexConfig() if nprobe is None else IndexConfig(nprobe=nprobe, compact_nprobe=nprobe)
        return cls(index=index, background_refit=True)


@dataclass(frozen=True)
class Span:
    """A chunk's (key, value) pairs and where they came from."""

    keys: torch.Tensor | np.ndarray | None  # (T, D), or (T, channels, D) for a store of several channels
    values: torch.Tensor | np.ndarray | None
    text: bytes  # the span's bytes
    byte_start: int
    byte_end: int
    event_id: int | None = None
    document_id: int | None = None
    session_id: int | None = None
    weight_version: int = 0
    imported_from: str | None = None
    token_start: int | None = None  # stream position of the first pair in its session
    # Instead of keys and values: (keys, values) bytes of `tokens` pairs already in the store's pair format
    # (an import).
    encoded: tuple[bytes, bytes] | None = None
    tokens: int = 0

    @property
    def num_tokens(self) -> int:
        return self.tokens if self.encoded is not None else self.keys.shape[0]


def row_place(session_id: int | None, document_id: int | None, imported_from: str | None, byte_start: int,
              byte_end: int, token_start: int | None = None) -> RowPlace:
    """A row's place in its stream: a session's (or a document's, or an evaluation's) byte stream;
    imported rows stand alone (their neighbours were not imported with them)."""
    if imported_from:
        return RowPlace(None, byte_start, byte_end)
    return RowPlace((session_id, document_id), byte_start, byte_end, token_start)


def display_text(data: bytes) -> str:
    """A span's bytes as text: invalid UTF-8 and NUL (which PostgreSQL text cannot hold) become U+FFFD.
    The bytes themselves stay exact in the event log."""
    return data.decode("utf-8", errors="replace").replace("\x00", "\ufffd")


def delete_memory_rows(db: Session, *, agent_id: int, memory_ids: Sequence[int]) -> list[int]:
    """Delete `agent_id`'s rows among `memory_ids` in the caller's transaction; returns the ids deleted.

    Tombstones are written in the same transaction, so once it commits every store
    (in this process or another) drops the rows at its next catch-up, for good.
    """
    lock_agent(db, agent_id)  # before the rows: the lock order every writer keeps (memory.db)
    owned = list(db.scalars(select(Memory.id).where(Memory.agent_id == agent_id, Memory.id.in_(memory_ids))))
    if owned:
        db.execute(delete(Memory).where(Memory.agent_id == agent_id, Memory.id.in_(owned)))
        db.execute(insert(MemoryTombstone), [{"agent_id": agent_id, "memory_id": i} for i in owned])
    return owned


class MemoryStore:
    """Implements models.MemoryReader for one agent over its view; safe to share between threads.

    A store of several `channels` (an imported model's memory layers times their key/value heads,
    models.layer_memory) keeps one view per channel its `pair_format` keeps over the same rows;
    `session_reader` searches them. It writes rows in that format, and reads rows of any format that holds
    what it keeps. Search and follow read the views as they stand: call `catch_up()` first to see what other
    writers committed since.
    """

    def __init__(
        self, *, agent_id: int, sessions: sessionmaker[Session], head_dim: int, config: StoreConfig = StoreConfig(),
        channels: int = 1, search_openings: bool = True, pair_format: PairFormat = FULL_PAIRS,
    ):
        self.agent_id = agent_id
        self.sessions = sessions
        self.head_dim = head_dim
        self.channels = channels
        self.pair_format = pair_format
        self.kept = pair_format.kept(channels)  # the model's channels this store keeps, one view each
        self.search_openings = search_openings  # whether streams' first pairs are searched (memory.mirror)
        self.config = config
        index = config.index.compact() if pair_format.keys_only else config.index
        self.views = [MemoryView(head_dim, index, name=f"agent-{agent_id}" + (f"-channel-{c}" if c else ""),
                                 search_openings=search_openings, values=not pair_format.keys_only)
                      for c in self.kept]
        self.view_of = dict(zip(self.kept, self.views))  # model channel -> its view
        self.view = self.views[0]  # holds the store's lock and its row bookkeeping
        # Rows whose format lacks what this store keeps (keys-only rows, read by a store whose memory layers
        # attend): never searched here, and not read again at each catch-up.
        self.unreadable: set[int] = set()
        self.memory_watermark = 0  # highest memory id this store has seen
        self.tombstone_watermark = 0  # highest tombstone id this store has applied
        # Rows with this id or above stay out (None: none do). A replay reads the memory as it stood when
        # the event it re-learns was first learned: rows are written in learning order, so that is every
        # row below the first one of that event or a later one (learner.replay). Raise it, never lower it.
        self.id_ceiling: int | None = None

    # -- writing -----------------------------------------------------------------------------

    def add_spans(self, spans: Sequence[Span], db: Session | None = None) -> list[int]:
        """Store spans durably and make them searchable; returns their memory ids.

        With `db`, the rows join the caller's transaction and enter the view at the
        next catch-up after it commits; without, they are committed here first.
        """
        rows = [self._row(span) for span in spans]
        if db is not None:
            lock_agent(db, self.agent_id)  # the lock order every writer keeps (memory.db); held already by most
            db.add_all(rows)
            db.flush()
            return [row.id for row in rows]
        with self.sessions.begin() as own:
            lock_agent(own, self.agent_id)
            own.add_all(rows)
            own.flush()
            ids = [row.id for row in rows]
        self.catch_up()
        return ids

    def replace_rows(self, memory_ids: Sequence[int], spans: Sequence[Span]) -> list[int]:
        """Replace rows by `spans` in one transaction; returns the new ids.

        For a replay re-encoding an event whose stream lost an earlier event (learner.replay): the new rows
        enter this store's RAM at once, whatever its ceiling, because they stand where the old ones stood
        in the order of learning. Every other store sees the new ids and the old rows' tombstones at its
        next catch-up, as for any write.
        """
        with self.sessions.begin() as db:
            delete_memory_rows(db, agent_id=self.agent_id, memory_ids=memory_ids)
            rows = [self._row(span) for span in spans]
            db.add_all(rows)
            db.flush()
            ids = [row.id for row in rows]
        with self.view.lock, self.sessions() as db:
            self._add_rows(db.execute(select(*ROW_COLUMNS).where(Memory.id.in_(ids)).order_by(Memory.id)))
        self.catch_up()  # the old rows' tombstones
        return ids

    def _row(self, span: Span) -> Memory:
        count = span.num_tokens
        if not 0 < count <= MAX_SPAN_TOKENS:
            raise ValueError(f"a span holds 1..{MAX_SPAN_TOKENS} tokens, got {count}")
        if span.encoded is not None:
            keys, values = span.encoded
        else:
            shape = self.pair_shape(count)
            if tuple(span.keys.shape) != shape or tuple(span.values.shape) != shape:
                raise ValueError(f"keys and values must both be {shape}")
            keys, values = self.pair_format.encode(span.keys, span.values)
        return Memory(
            agent_id=self.agent_id,
            event_id=span.event_id,
            document_id=span.document_id,
            session_id=span.session_id,
            imported_from=span.imported_from,
            byte_start=span.byte_start,
            byte_end=span.byte_end,
            token_start=span.token_start,
            text=display_text(span.text),
            num_tokens=count,
            head_dim=self.head_dim,
            keys=keys,
            values=values,
            pair_format=self.pair_format.name,
            weight_version=span.weight_version,
        )

    def pair_shape(self, tokens: int) -> tuple[int, ...]:
        """The shape of a span's keys (and values) of `tokens` pairs: the model's, every channel."""
        return (tokens, self.head_dim) if self.channels == 1 else (tokens, self.channels, self.head_dim)

    def encoded(self, keys: bytes, values: bytes, pair_format: str | None, tokens: int) -> tuple[bytes, bytes] | None:
        """A row stored in `pair_format`, as this store writes rows; None where the row lacks what it keeps."""
        try:
            return self.pair_format.reencode(PairFormat.parse(pair_format), keys, values, tokens=tokens,
                                             channels=self.channels, head_dim=self.head_dim)
        except ValueError:
            return None

    def held(self, keys: bytes, values: bytes, pair_format: str | None,
             tokens: int) -> tuple[np.ndarray | KeyCodes, np.ndarray | None] | None:
        """What this store keeps of a row stored in `pair_format`, exactly as if it had been written in the store's
        format: keys (T, kept, D), fp16 or a keys-only store's codes, and values (None where it keeps none); None
        where the row lacks them."""
        encoded = self.encoded(keys, values, pair_format, tokens)
        if encoded is None:
            return None
        if self.pair_format.keys_only:
            return self.pair_format.key_codes(encoded[0], tokens=tokens, kept=len(self.kept),
                                              head_dim=self.head_dim), None
        return self.pair_format.decode(*encoded, tokens=tokens, channels=self.channels, head_dim=self.head_dim)

    # -- catching up ---------------------------------------------------------------------------

    def catch_up(self) -> None:
        """Apply what SQL has and the view lacks: new rows, then tombstones; then refit the index if due."""
        with self.view.lock, self.sessions() as db:
            low = max(0, self.memory_watermark - self.config.lookback_ids)
            candidate_ids = db.scalars(
                select(Memory.id).where(Memory.agent_id == self.agent_id, Memory.id > low, *self._below_ceiling())
                .order_by(Memory.id)
            ).all()
            # Deleted rows are gone from SQL in the same transaction as their tombstone, and ids
            # are never reused, so anything listed here and not in RAM is new to this store.
            fresh = [i for i in candidate_ids if i not in self.view and i not in self.unreadable]
            if fresh:
                self._add_rows(
                    db.execute(
                        select(*ROW_COLUMNS)
                        .where(Memory.agent_id == self.agent_id, Memory.id.in_(fresh))
                        .order_by(Memory.id)
                    )
                )
            if candidate_ids:
                self.memory_watermark = max(self.memory_watermark, candidate_ids[-1])
            low = max(0, self.tombstone_watermark - self.config.lookback_ids)
            tombstones = db.execute(
                select(MemoryTombstone.id, MemoryTombstone.memory_id)
                .where(MemoryTombstone.agent_id == self.agent_id, MemoryTombstone.id > low)
                .order_by(MemoryTombstone.id)
            ).all()
            for _, memory_id in tombstones:
                for view in self.views:
                    view.remove_row(memory_id)
            if tombstones:
                self.tombstone_watermark = max(self.tombstone_watermark, tombstones[-1][0])
            for view in self.views:
                if view.needs_refit():
                    if self.config.background_refit:
                        view.refit_in_background()
                    else:
                        view.refit()

    def _below_ceiling(self) -> tuple:
        return () if self.id_ceiling is None else (Memory.id < self.id_ceiling,)

    def _add_rows(self, rows, *, index: bool = True) -> None:
        """Rows of ROW_COLUMNS into the views (`index`: into their indexes too; a rebuild fits them after)."""
        for memory_id, key_blob, value_blob, pair_format, tokens, *where in rows:
            pairs, place = self.held(key_blob, value_blob, pair_format, tokens), row_place(*where)
            if pairs is None:
                self._unreadable(memory_id, pair_format)
                continue
            keys, values = pairs
            for channel, view in enumerate(self.views):
                add = view.add_row if index else view.mirror.add_row
                add(memory_id, keys[:, channel], None if values is None else values[:, channel], place)

    def _unreadable(self, memory_id: int, pair_format: str | None) -> None:
        if not self.unreadable:
            log.warning("agent %s: memory %s is stored as %s, which lacks what this store reads (%s): it is not "
                        "searched here (it is recalled by its words); so are others like it", self.agent_id,
                        memory_id, pair_format, self.pair_format.name)
        self.unreadable.add(memory_id)

    def wait_for_refit(self, timeout: float | None = None) -> None:
        """Block until a background refit in flight (if any) has replaced the index."""
        for view in self.views:
            view.wait_for_refit(timeout)

    def rebuild(self) -> None:
        """Forget everything in RAM and rebuild the view from SQL alone."""
        with self.view.lock, self.sessions() as db:
            for view in self.views:
                view.clear()
            result = db.execute(
                select(*ROW_COLUMNS)
                .where(Memory.agent_id == self.agent_id, *self._below_ceiling())
                .order_by(Memory.id)
                .execution_options(yield_per=REBUILD_BATCH_ROWS)
            )
            mirror = self.view.mirror
            self.unreadable.clear()
            self._add_rows(result, index=False)  # pairs only: the index is fitted to all of them at once below
            self.memory_watermark = max([0, *mirror.row_ids[-1:].tolist(), *self.unreadable])
            last_tombstone = db.scalar(
                select(MemoryTombstone.id)
                .where(MemoryTombstone.agent_id == self.agent_id)
                .order_by(MemoryTombstone.id.desc())
                .limit(1)
            )
            self.tombstone_watermark = last_tombstone or 0
            for view in self.views:  # a serving store may search exactly while it fits in the background
                view.refit(exact=self.config.background_refit and view.config.exact_until_fitted)

    # -- reading (the view as it stands) -------------------------------------------------------

    def search(self, queries: torch.Tensor, top_k: int) -> RetrievedMemory:
        """Top-k stored pairs by inner product for every query of a chunk, queries (B, T, H, D); no catch-up."""
        return self.view.search(queries, top_k)

    def search_ids(self, queries: np.ndarray, top_k: int) -> SearchResult:
        """(N, D) float32 queries -> ids, scores, pairs, liveness, each (N, K); no catch-up."""
        return self.view.search_ids(queries, top_k)

    def follow(self, ids: torch.Tensor) -> RetrievedMemory:
        """The pair stored right after each of `ids` (models.MemoryReader); reads RAM only."""
        return self.view.follow(ids)

    def session_reader(self, session_id: int | None) -> SessionReader:
        """What a stream of session `session_id` (None: a stream of its own) searches with its memory layers."""
        return SessionReader(self, session_id)

    def __len__(self) -> int:
        return len(self.view)

    @property
    def nbytes(self) -> int:
        """What the store holds in RAM, about (`MemoryView.nbytes`, over its channels)."""
        return sum(view.nbytes for view in self.views)

    # -- snapshots (memory.snapshot) -----------------------------------------------------------

    def save_snapshot(self, directory: Path) -> None:
        """Write index bytes, RAM pairs and watermarks atomically (a temp dir renamed into place)."""
        save_snapshot(self, directory)

    def load_snapshot(self, directory: Path) -> bool:
        """Adopt a snapshot if it is this agent's and readable; returns False (and keeps RAM as it was) if not."""
        snapshot = read_snapshot(directory, agent_id=self.agent_id, head_dim=self.head_dim, config=self.view.config,
                                 channels=self.channels, search_openings=self.search_openings,
                                 pair_format=self.pair_format)
        if snapshot is None:
            return False
        with self.view.lock:
            for view, (index, mirror) in zip(self.views, snapshot.channels):
                view.replace(index, mirror)
            self.memory_watermark, self.tombstone_watermark = snapshot.memory_watermark, snapshot.tombstone_watermark
        return True

    @classmethod
    def open(
        cls,
        *,
        agent_id: int,
        sessions: sessionmaker[Session],
        head_dim: int,
        snapshot: Path | None = None,
        config: StoreConfig = StoreConfig(),
        channels: int = 1,
        search_openings: bool = True,
        pair_format: PairFormat = FULL_PAIRS,
    ) -> MemoryStore:
        """A caught-up store: from a snapshot plus SQL past it when one is usable, else from SQL alone."""
        store = cls(agent_id=agent_id, sessions=sessions, head_dim=head_dim, config=config, channels=channels,
                    search_openings=search_openings, pair_format=pair_format)
        if snapshot is None or not store.load_snapshot(snapshot):
            store.rebuild()
        store.catch_up()
        return store


class SessionReader:
    """models.layer_memory.LayerMemoryReader over a store's channels, for a stream of one session.

    Of the session's own pairs, those its memory layers hold in their state (the sinks, the recent
    window) are left out of every search, so no pair is weighed twice (and streams' first pairs are
    never searched: memory.mirror). Positions are not returned: retrieved pairs sit at the window's
    edge (models.layer_memory).
    """

    def __init__(self, store: MemoryStore, session_id: int | None):
        self.store, self.session_id = store, session_id
        self._excluded: tuple[tuple[int, int], np.ndarray] | None = None  # the last range's, shared by channels

    def search_channel(self, channel: int, queries: torch.Tensor, top_k: int, *,
                       stream_range: tuple[int, int]) -> tuple[RetrievedMemory, None]:
        view = self.store.view_of.get(channel)
        if view is None:  # a channel the store does not keep (memory.pair_format): nothing found there
            return empty_retrieval(queries, top_k), None
        return view.search(queries, top_k, self._outside(stream_range)), None

    def _outside(self, stream_range: tuple[int, int]) -> np.ndarray | None:
        if self.session_id is None:
            return None
        if self._excluded is None or self._excluded[0] != stream_range:
            self._excluded = stream_range, self.store.view.pairs_outside(self.session_id, *stream_range)
        return self._excluded[1]


def memory_for(model: LanguageModel, store: MemoryStore, session_id: int | None, *,
               attend: bool = True) -> MemoryStore | SessionReader | None:
    """What `model` reads `store` through while reading session `session_id`: a retrieval block searches
    the store itself; an imported model's memory layers search its channels (SessionReader), or nothing
    where they are not to attend to memory (Settings.memory_attention)."""
    if model.capabilities.memory == "retrieval_block":
        return store
    return store.session_reader(session_id) if attend else None
