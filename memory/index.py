"""A FAISS index of token keys under stable ids, chosen by size, rebuildable from SQL.

Ids are SQL-derived (see memory.ids), never FAISS positions. Small indexes are
exact inner product (IndexIDMap over IndexFlatIP). Past `ivf_threshold`
vectors the index becomes an inverted file whose lists hold fp16 codes
(IVF + SQfp16: lossless for keys that SQL stores as fp16 anyway, half the bytes
to scan), trained on a sample of the stored keys and retrained when it has grown
`retrain_growth` times past the size it was trained at. Both kinds support
`remove_ids`, so deletes are real. A keys-only store's indexes hold 4-bit codes
that shortlist, and its view ranks the shortlist by the keys (`IndexConfig.compact`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

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
    # Lists probed by a keys-only store's indexes (`compact`): searched by a question's few tokens, they afford more.
    compact_nprobe: int = 64
    # Retrain the coarse quantizer when the index has grown this much since training.
    retrain_growth: float = 2.0
    # Training sample per list (FAISS wants >= 39).
    train_points_per_list: int = 64
    # What an exact index holds per key ("Flat": fp32; "SQfp16": fp16, exact for keys stored as fp16 or less).
    flat_codes: str = "Flat"
    # What an inverted file's lists hold per key (a FAISS factory code: "SQfp16", "PQ32", ...).
    ivf_codes: str = "SQfp16"
    # Where an inverted file's codes only approximate the keys: how many candidates per result it shortlists,
    # then ranked by the keys themselves (memory.view); 1: its own ranking stands.
    rerank: int = 1
    # Whether a store opened from SQL in a serving process (StoreConfig.background_refit) searches an exact index
    # at once and fits its inverted file in the background, instead of fitting it before it serves.
    exact_until_fitted: bool = False

    def compact(self) -> IndexConfig:
        """The settings of a keys-only store's indexes (memory.pair_format), whose RAM holds the keys themselves as
        int8 codes (memory.mirror). Exact while small, with fp16 codes (its keys are fp16 values, and fp16 needs
        no training, as 4 bits would before the first key). Once inverted, 4-bit codes (32 bytes a key, not 128)
        that only shortlist 4x the candidates, ranked then by the keys, with `compact_nprobe` lists probed: such a
        store is searched by a question's few tokens, not by every token read. On SmolLM2-135M's searched keys at 68K
        tokens, with its own queries, this finds 0.79-0.81 of the exact top-32, where fp16 codes probing 16 lists
        found 0.61-0.62 (BENCHMARKS.md, "A memory a tenth the size"). Opened from SQL to serve, it searches
        exactly until its inverted file is fitted in the background: training the lists is most of an open's
        time (about a minute for 1M keys on two cores), and an exact search of a question costs tens of ms."""
        return replace(self, flat_codes="SQfp16", ivf_codes="SQ4", rerank=4, nprobe=self.compact_nprobe,
                       exact_until_fitted=True)


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
        self._index: faiss.Index = self._exact()
        self.trained_at = 0  # vectors present when the IVF quantizer was trained (0: exact index)

    def _exact(self) -> faiss.Index:
        if self.config.flat_codes == "Flat":
            return faiss.IndexIDMap(faiss.IndexFlatIP(self.dim))
        return faiss.IndexIDMap(faiss.index_factory(self.dim, self.config.flat_codes, faiss.METRIC_INNER_PRODUCT))

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
    def reranked(self) -> bool:
        """Whether its codes only shortlist, and the keys themselves rank (IndexConfig.rerank, memory.view): an
        inverted file's; an exact index's codes rank exactly."""
        return bool(self.trained_at) and self.config.rerank > 1

    @property
    def code_bytes(self) -> int:
        """Bytes the index holds per key, its id included."""
        codes = faiss.extract_index_ivf(self._index) if self.trained_at else faiss.downcast_index(self._index.index)
        return int(codes.code_size) + 8

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

    def rebuild(self, ids: np.ndarray, vectors: np.ndarray, seed: int = 0, *, exact: bool = False) -> None:
        """Replace the index with one fitted to these vectors (exact or IVF by size; exact whatever the size with
        `exact`, which `needs_rebuild` then reports past the threshold)."""
        n = len(ids)
        if exact or n <= self.config.ivf_threshold:
            index: faiss.Index = self._exact()
            trained_at = 0
        else:
            nlist = ivf_lists(n, self.config.ivf_lists_per_sqrt)
            index = faiss.index_factory(self.dim, f"IVF{nlist},{self.config.ivf_codes}", faiss.METRIC_INNER_PRODUCT)
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
