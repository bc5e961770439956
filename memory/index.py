"""A FAISS index of token keys under stable ids, chosen by size, rebuildable from SQL.

Ids are SQL-derived (see memory.ids), never FAISS positions. Small indexes are
exact inner product (IndexIDMap2 over IndexFlatIP). Past `ivf_threshold`
vectors the index becomes an inverted file whose lists hold fp16 codes
(IVF + SQfp16: lossless for keys that SQL stores as fp16 anyway, half the bytes
to scan), trained on a sample of the stored keys and retrained when it has grown
`retrain_growth` times past the size it was trained at. Both kinds support
`remove_ids`, so deletes are real.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import faiss
import numpy as np


@dataclass(frozen=True)
class IndexConfig:
    # Vectors above which search switches from exact to IVF (exact costs ~70 ms per 2048-query chunk at 10K).
    ivf_threshold: int = 8_192
    # Inverted lists per sqrt(vectors): nlist = ivf_lists_per_sqrt * sqrt(n), rounded up to a power of two.
    ivf_lists_per_sqrt: float = 4.0
    # Lists probed per query (bench.memory, shipped model's keys, 512 queries per chunk): at 1M keys
    # 10 probes find 0.938 of the exact top-32 in 26 ms, 16 find 0.957 in 31 ms, 32 find 0.979 in 46 ms;
    # at 10K, 10 probes find only 0.889. 16 keeps every size above 0.93 with room under 50 ms.
    nprobe: int = 16
    # Retrain the coarse quantizer when the index has grown this much since training.
    retrain_growth: float = 2.0
    # Training sample per list (FAISS wants >= 39).
    train_points_per_list: int = 64


# FAISS's k-means wants at least this many training points per inverted list.
MIN_POINTS_PER_LIST = 39


def ivf_lists(vectors: int, lists_per_sqrt: float) -> int:
    """Inverted lists for an index of `vectors`: lists_per_sqrt * sqrt(n) rounded up to a power of two
    (the index keeps growing until its next retrain), but never so many that a list trains on
    fewer than MIN_POINTS_PER_LIST vectors."""
    wanted = 2 ** math.ceil(math.log2(lists_per_sqrt * math.sqrt(vectors)))
    affordable = 2 ** max(0, math.floor(math.log2(vectors / MIN_POINTS_PER_LIST)))
    return max(1, min(wanted, affordable))


class VectorIndex:
    """Inner-product search over (id, vector) pairs; not thread-safe (the store serialises access)."""

    def __init__(self, dim: int, config: IndexConfig = IndexConfig()):
        self.dim = dim
        self.config = config
        self._index: faiss.Index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self.trained_at = 0  # vectors present when the IVF quantizer was trained (0: exact index)

    @property
    def kind(self) -> str:
        return "ivf" if self.trained_at else "flat"

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        self._index.add_with_ids(
            np.ascontiguousarray(vectors, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64)
        )

    def remove_range(self, first_id: int, end_id: int) -> int:
        """Remove every id in [first_id, end_id); returns how many were present."""
        return int(self._index.remove_ids(faiss.IDSelectorRange(first_id, end_id)))

    def search(self, queries: np.ndarray, k: int, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (N, k); missing results have id -1. `exclude`: ids never returned."""
        if len(self) == 0:
            n = queries.shape[0]
            return np.full((n, k), -np.inf, dtype=np.float32), np.full((n, k), -1, dtype=np.int64)
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if exclude is None or len(exclude) == 0:
            return self._index.search(queries, k)
        # Filtered inside the search, so the k results are k that may be returned.
        selector = faiss.IDSelectorNot(faiss.IDSelectorBatch(np.ascontiguousarray(exclude, dtype=np.int64)))
        params = (faiss.SearchParametersIVF(sel=selector, nprobe=self.nprobe) if self.trained_at
                  else faiss.SearchParameters(sel=selector))
        return self._index.search(queries, k, params=params)

    @property
    def lists(self) -> int:
        """Inverted lists of an IVF index (0 for an exact one)."""
        return int(faiss.extract_index_ivf(self._index).nlist) if self.trained_at else 0

    @property
    def nprobe(self) -> int:
        """Inverted lists probed per query (0 for an exact index)."""
        return int(faiss.extract_index_ivf(self._index).nprobe) if self.trained_at else 0

    @nprobe.setter
    def nprobe(self, lists: int) -> None:
        """Probe `lists` lists from now on (until the next rebuild, which goes back to the config's)."""
        if self.trained_at:
            faiss.extract_index_ivf(self._index).nprobe = lists

    def needs_rebuild(self) -> bool:
        """True when the index kind or training no longer fits its size."""
        n = len(self)
        if not self.trained_at:
            return n > self.config.ivf_threshold
        return n > self.config.retrain_growth * self.trained_at or n < self.config.ivf_threshold / 2

    def rebuild(self, ids: np.ndarray, vectors: np.ndarray, seed: int = 0) -> None:
        """Replace the index with one fitted to these vectors (exact or IVF by size)."""
        n = len(ids)
        if n <= self.config.ivf_threshold:
            index: faiss.Index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
            trained_at = 0
        else:
            nlist = ivf_lists(n, self.config.ivf_lists_per_sqrt)
            index = faiss.index_factory(self.dim, f"IVF{nlist},SQfp16", faiss.METRIC_INNER_PRODUCT)
            sample = np.random.default_rng(seed).choice(
                n, size=min(n, nlist * self.config.train_points_per_list), replace=False
            )
            index.train(np.ascontiguousarray(vectors[np.sort(sample)], dtype=np.float32))
            trained_at = n
        self._index = index
        self.trained_at = trained_at
        self.nprobe = self.config.nprobe
        self.add(ids, vectors)

    def to_bytes(self) -> bytes:
        return faiss.serialize_index(self._index).tobytes()

    @classmethod
    def from_bytes(cls, blob: bytes, dim: int, trained_at: int, config: IndexConfig = IndexConfig()) -> VectorIndex:
        index = cls(dim, config)
        index._index = faiss.deserialize_index(np.frombuffer(blob, dtype=np.uint8))
        index.trained_at = trained_at
        index.nprobe = config.nprobe
        return index
