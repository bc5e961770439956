"""MemoryView: one agent's memory as searchable in RAM, a FAISS index over fp16 (key, value) pairs.

The view knows nothing of SQL: whoever owns it (memory.store, or a benchmark with no database)
adds and removes whole rows, and search and follow read RAM only, so they cost no round trip and
see exactly the rows given so far. Refitting the index as it grows is memory.refit's job; the view
tells it of every change, so a refit fitted in the background misses none.

Letters: B batch, T time, H heads, D head dim, K retrieved pairs, N queries (B*T*H).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import numpy as np
import torch

from memory.ids import id_range, pair_ids, split_ids
from memory.index import IndexConfig, VectorIndex
from memory.mirror import PairMirror, RowPlace
from memory.refit import IndexRefit
from models import RetrievedMemory


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


def flat_queries(queries: torch.Tensor) -> np.ndarray:
    """(B, T, H, D) tensor -> (N, D) float32 array, FAISS's layout."""
    return queries.detach().reshape(-1, queries.shape[-1]).float().cpu().numpy()


class MemoryView:
    """Implements models.MemoryReader over the rows it was given; safe to share between threads.

    `lock` (reentrant) guards the index and the pairs; an owner that must change the view and its
    own bookkeeping together (memory.store's watermarks) holds it around both.
    """

    def __init__(self, head_dim: int, config: IndexConfig, *, name: str = "memory", search_openings: bool = True,
                 values: bool = True):
        self.head_dim = head_dim
        self.config = config
        self.name = name  # in log lines and the refit thread's name, e.g. "agent-3"
        self.search_openings = search_openings  # whether streams' first pairs are searched (memory.mirror)
        self.holds_values = values  # False: a keys-only store's (memory.pair_format); values read as zeros
        self.index = VectorIndex(head_dim, config)
        self.mirror = self.new_mirror()
        self.lock = threading.RLock()
        self.refits = IndexRefit(self)

    # -- changing ------------------------------------------------------------------------------

    def add_row(self, memory_id: int, keys: np.ndarray, values: np.ndarray | None,
                place: RowPlace | None = None) -> None:
        """One row's fp16 pairs, keys and values (T, D) (None: a keys-only view's), searchable from now on."""
        with self.lock:
            self.mirror.add_row(memory_id, keys, values, place)
            ids, held = self.mirror.searchable(memory_id)
            self.index.add(ids, held.astype(np.float32))
            self.refits.note(True, memory_id)

    def remove_row(self, memory_id: int) -> bool:
        """Forget one row; returns False if it was not here."""
        with self.lock:
            if not self.mirror.remove_row(memory_id):
                return False
            self.index.remove_range(*id_range(memory_id))
            self.refits.note(False, memory_id)
            return True

    def replace(self, index: VectorIndex, mirror: PairMirror) -> None:
        """Adopt a whole new index and pairs (a snapshot, a rebuild); a background refit in flight is dropped."""
        with self.lock:
            self.index, self.mirror = index, mirror
            self.refits.invalidate()

    def clear(self) -> None:
        """Forget every row (a rebuild starts here)."""
        self.replace(VectorIndex(self.head_dim, self.config), self.new_mirror())

    def new_mirror(self) -> PairMirror:
        """An empty mirror of this view's kind."""
        return PairMirror(self.head_dim, search_openings=self.search_openings, values=self.holds_values)

    # -- refitting (memory.refit) --------------------------------------------------------------

    def needs_refit(self) -> bool:
        """True when the index kind or its training no longer fits the number of pairs."""
        with self.lock:
            return self.index.needs_rebuild()

    def refit(self, *, exact: bool = False) -> None:
        """Refit the index to the live pairs now, in this thread (`exact`: an exact index whatever the size, to
        serve at once; `needs_refit` then asks for the inverted file)."""
        self.refits.now(exact=exact)

    def refit_in_background(self) -> None:
        """Start refitting in a thread (unless one is running); the current index serves meanwhile."""
        self.refits.start()

    def wait_for_refit(self, timeout: float | None = None) -> None:
        """Block until a background refit in flight (if any) has replaced the index."""
        self.refits.wait(timeout)

    # -- reading -------------------------------------------------------------------------------

    def search(self, queries: torch.Tensor, top_k: int, exclude: np.ndarray | None = None) -> RetrievedMemory:
        """Top-k pairs by inner product for every query of a chunk. queries: (B, T, H, D).
        `exclude`: pair ids never returned."""
        return self.search_ids(flat_queries(queries), top_k, exclude).as_retrieved(queries)

    def search_ids(self, queries: np.ndarray, top_k: int, exclude: np.ndarray | None = None) -> SearchResult:
        """(N, D) float32 queries -> ids, scores, pairs, liveness, each (N, K)."""
        with self.lock:
            reranked = self.index.reranked
            scores, ids = self.index.search(queries, top_k * self.config.rerank if reranked else top_k, exclude)
            rows, offsets = split_ids(np.maximum(ids, 0))
            slots, live, _ = self.mirror.slots(rows, offsets)
            live &= ids >= 0
            if reranked:  # the index's codes only shortlisted: the keys themselves rank (memory.index)
                exact = self.mirror.inner_products(queries, np.where(live, slots, 0))
                best = np.argsort(np.where(live, -exact, np.inf), axis=1, kind="stable")[:, :top_k]
                scores, ids, slots, live = (np.take_along_axis(a, best, 1) for a in (exact, ids, slots, live))
            # Pairs stay fp16 in numpy; torch widens them (as_retrieved), much faster than numpy would.
            keys = _gathered(self.mirror.keys_at, slots, live, self.head_dim)  # (N, K, D)
            values = _gathered(self.mirror.values_at, slots, live, self.head_dim)
        return SearchResult(ids=np.where(live, ids, -1), scores=scores, keys=keys, values=values, live=live)

    def follow(self, ids: torch.Tensor) -> RetrievedMemory:
        """The pair stored right after each of `ids` (models.MemoryReader): the next one of its row,
        or the first of the row that continues it in its stream."""
        flat = ids.reshape(-1).cpu().numpy()
        rows, offsets = split_ids(np.maximum(flat, 0))
        rows, offsets = rows.copy(), offsets + 1
        keys = np.zeros((len(flat), self.head_dim), dtype=np.float16)
        values = np.zeros_like(keys)
        with self.lock:
            mirror = self.mirror
            slots, live, row_index = mirror.slots(rows, offsets)
            live &= flat >= 0
            if len(mirror.row_ids):
                # A row's last pair: continued by the first pair of the row that continues the row, if any.
                ends = (flat >= 0) & (mirror.row_ids[row_index] == rows) & (offsets == mirror.row_lengths[row_index])
                for i in np.nonzero(ends)[0]:  # few: one pair in a row's length
                    next_row = mirror.next_row(int(rows[i]))
                    if next_row is not None:
                        rows[i], offsets[i] = next_row, 0
                        slot, found, _ = mirror.slots(rows[i : i + 1], offsets[i : i + 1])
                        slots[i], live[i] = slot[0], found[0]
            keys[live], values[live] = mirror.keys_at(slots[live]), mirror.values_at(slots[live])
        shape = (*ids.shape, self.head_dim)
        return RetrievedMemory(
            torch.from_numpy(keys).reshape(shape).to(ids.device, torch.float32),
            torch.from_numpy(values).reshape(shape).to(ids.device, torch.float32),
            torch.from_numpy(live).reshape(ids.shape).to(ids.device),
            torch.from_numpy(np.where(live, pair_ids(rows, offsets), -1)).reshape(ids.shape).to(ids.device),
        )

    def pairs_outside(self, session: Hashable, lo: int, hi: int) -> np.ndarray:
        """Pair ids of `session`'s stream at positions outside [lo, hi) (memory.mirror)."""
        with self.lock:
            return self.mirror.pairs_outside(session, lo, hi)

    def __contains__(self, memory_id: int) -> bool:
        return memory_id in self.mirror

    def __len__(self) -> int:
        """Live pairs."""
        return self.mirror.live_tokens

    @property
    def nbytes(self) -> int:
        """What the view holds in RAM, about: its pairs (with the free slots of their arrays) and its index's codes
        and ids (memory.index)."""
        return self.mirror.nbytes + len(self.index) * self.index.code_bytes


def _gathered(read: Callable[[np.ndarray], np.ndarray], slots: np.ndarray, live: np.ndarray, dim: int) -> np.ndarray:
    """`read` at the live ones of `slots` (..., ) as (..., dim) fp16, zeros where not live."""
    if live.all():
        return read(slots)
    found = np.zeros((*slots.shape, dim), dtype=np.float16)
    found[live] = read(slots[live])
    return found
