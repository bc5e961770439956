"""Refitting a view's FAISS index to its live pairs, in the caller's thread or in one of its own.

An IVF index is trained at each doubling of the pairs it holds: seconds at 1M keys. Fitted in the
caller's thread, that stalls whoever found it due; fitted in a thread of its own (FAISS releases
the GIL), the old index serves searches meanwhile. The rows added and removed while it fits are
kept in a journal and replayed onto the new index before it replaces the old one, so the new index
misses no change. A view replaced wholesale meanwhile (a rebuild, a snapshot) bumps the
generation: the refit in flight was fitted to a view that no longer exists and is dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

import numpy as np

from memory.ids import id_range
from memory.index import IndexConfig, VectorIndex
from memory.mirror import PairMirror

log = logging.getLogger(__name__)

# Background fits run one at a time in a process: a store opened from SQL starts one per channel, and a server
# loading many agents one per channel of each. Side by side they only share the cores, each holding its k-means
# buffers and the exact index it replaces at once (bench.memory_size's resident growth: 4,666 bytes a token at
# 256 KB with six channels fitting together), and slow the turns served meanwhile.
_ONE_FIT_AT_A_TIME = threading.Lock()


class RefittableView(Protocol):
    """What a refit reads and replaces of a view (`memory.view.MemoryView`), under the view's lock."""

    name: str
    head_dim: int
    config: IndexConfig
    index: VectorIndex
    mirror: PairMirror
    lock: threading.RLock


class IndexRefit:
    """The refits of one view's index: `now()`, or `start()` one in the background and `wait()` for it.

    The view calls `note` and `invalidate` holding its lock; `now` and `start` take it themselves.
    """

    def __init__(self, view: RefittableView):
        self.view = view
        # While a background refit runs: the rows added (True) and removed (False) since its snapshot
        # of the pairs, replayed onto the new index before it replaces the old one; None when none runs.
        self._journal: list[tuple[bool, int]] | None = None
        self._thread: threading.Thread | None = None
        self._generation = 0  # bumped whenever the view's index is replaced wholesale

    def note(self, added: bool, memory_id: int) -> None:
        """Under the view's lock: a row entered (or left) the view."""
        if self._journal is not None:
            self._journal.append((added, memory_id))

    def invalidate(self) -> None:
        """Under the view's lock: the index was replaced wholesale; a refit in flight is stale."""
        self._generation += 1
        self._journal = None

    def _live_ids_and_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """Under the view's lock: what a refit fits, every live pair's FAISS id and key (the pairs compacted first)."""
        self.view.mirror.compact()
        ids, keys = self.view.mirror.live_searchable()
        return ids, keys.astype(np.float32)

    def now(self, *, exact: bool = False) -> None:
        """Refit the view's index in place, in this thread (`exact`: an exact index, whatever the size)."""
        with self.view.lock:
            started = time.perf_counter()
            ids, vectors = self._live_ids_and_vectors()
            self.view.index.rebuild(ids, vectors, exact=exact)
            log.info("%s: index refit as %s over %d keys in %.1fs", self.view.name, self.view.index.kind, len(ids),
                     time.perf_counter() - started)

    def start(self) -> None:
        """Snapshot the live pairs and fit a new index from them in a thread, unless one is running."""
        with self.view.lock:
            if self._journal is not None:
                return  # one is already running
            ids, vectors = self._live_ids_and_vectors()
            self._journal, generation = [], self._generation
            self._thread = threading.Thread(target=self._fit_in_background, args=(ids, vectors, generation),
                                            name=f"refit-{self.view.name}", daemon=True)
            self._thread.start()

    def _fit_in_background(self, ids: np.ndarray, vectors: np.ndarray, generation: int) -> None:
        view = self.view
        started = time.perf_counter()
        try:
            index = VectorIndex(view.head_dim, view.config)
            with _ONE_FIT_AT_A_TIME:
                index.rebuild(ids, vectors)  # FAISS releases the GIL: searches go on meanwhile
        except Exception:  # the old index keeps serving; the next catch-up tries again
            log.exception("%s: background index refit failed", view.name)
            with view.lock:
                if generation == self._generation:
                    self._journal = None
            return
        with view.lock:
            if generation != self._generation:
                return  # replaced wholesale meanwhile (rebuild, snapshot): stale, and any journal is a newer refit's
            journal, self._journal = self._journal or [], None
            for added, memory_id in journal:
                if added:  # a row removed again since is no longer in the mirror: nothing to add
                    ids, keys = view.mirror.searchable(memory_id)
                    index.add(ids, keys.astype(np.float32))
                else:
                    index.remove_range(*id_range(memory_id))
            view.index = index
        log.info("%s: index refit in the background as %s over %d keys in %.1fs (%d changes replayed)",
                 view.name, index.kind, len(ids), time.perf_counter() - started, len(journal))

    def wait(self, timeout: float | None = None) -> None:
        """Block until a background refit in flight (if any) has replaced the index."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
