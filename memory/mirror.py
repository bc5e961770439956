"""The in-RAM copy of live (key, value) pairs, addressed by memory row id and token offset.

Search returns FAISS ids; this maps them to the stored fp16 pairs without
touching SQL. Deleted rows leave holes that the next compaction drops. It also
knows which row continues which (`RowPlace`), so recall can follow a stored
text past the end of a row.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np

from memory.ids import pair_ids, token_ids


@dataclass(frozen=True)
class RowPlace:
    """Where a row's tokens sit: a row continues the row of the same stream whose bytes end where its own begin."""

    stream: Hashable | None  # e.g. (session id, document id); None: a row on its own (imported)
    byte_start: int
    byte_end: int
    # Stream position (in tokens) of the row's first pair in its session; None where not recorded.
    token_start: int | None = None

    @property
    def session(self) -> Hashable | None:
        """The session whose stream positions token_start counts in (the stream's first part)."""
        return self.stream[0] if isinstance(self.stream, tuple) and self.token_start is not None else None


class PairMirror:
    """A view's fp16 pairs by row, and which of them its index holds (`searchable`). A mirror of a keys-only
    store (`values=False`, memory.pair_format) holds keys alone, and reads zeros where values are asked for.

    A mirror for a pretrained model's memory layers (`search_openings=False`) keeps every stream's
    first pair out of the index: the model parks attention on a stream's first token whatever it is
    (an attention sink), so stored openings are alike in every stream and draw the same share from
    any query. The reading stream keeps its own sink; with the others searchable, `memories recall`
    ranked a stated fact first 10 of 20 times among 64 KB of other documents, without them 18.
    """

    def __init__(self, head_dim: int, *, search_openings: bool = True, values: bool = True):
        self.head_dim = head_dim
        self.search_openings = search_openings
        self.holds_values = values
        self.keys = np.zeros((0, head_dim), dtype=np.float16)
        self.values = np.zeros((0, self._value_dim), dtype=np.float16)
        self.used = 0  # slots filled, live or dead
        self.row_ids = np.zeros(0, dtype=np.int64)  # sorted live memory ids
        self.row_starts = np.zeros(0, dtype=np.int64)  # first slot of each row in row_ids
        self.row_lengths = np.zeros(0, dtype=np.int64)
        self.places: dict[int, RowPlace] = {}  # live rows that belong to a stream
        self._starting: dict[tuple[Hashable, int], int] = {}  # (stream, byte_start) -> row id
        self._session_rows: dict[Hashable, list[int]] = {}  # session -> its rows with positions, as added
        self._opening_rows: set[int] = set()  # live rows holding their stream's position 0

    @property
    def _value_dim(self) -> int:
        return self.head_dim if self.holds_values else 0

    def values_at(self, slots: np.ndarray) -> np.ndarray:
        """The values in `slots`, (*slots.shape, D); zeros where the mirror holds none."""
        if self.holds_values:
            return self.values[slots]
        return np.zeros((*slots.shape, self.head_dim), dtype=np.float16)

    @property
    def live_tokens(self) -> int:
        return int(self.row_lengths.sum())

    def __contains__(self, memory_id: int) -> bool:
        pos = np.searchsorted(self.row_ids, memory_id)
        return bool(pos < len(self.row_ids) and self.row_ids[pos] == memory_id)

    def add_row(self, memory_id: int, keys: np.ndarray, values: np.ndarray | None,
                place: RowPlace | None = None) -> None:
        """`values`: None (or anything) where the mirror holds none."""
        count = keys.shape[0]
        if place is not None and place.stream is not None:
            self.places[memory_id] = place
            self._starting[place.stream, place.byte_start] = memory_id
            if place.session is not None:
                self._session_rows.setdefault(place.session, []).append(memory_id)
                if place.token_start == 0:
                    self._opening_rows.add(memory_id)
        self._reserve(self.used + count)
        self.keys[self.used : self.used + count] = keys
        if self.holds_values:
            self.values[self.used : self.used + count] = values
        pos = np.searchsorted(self.row_ids, memory_id)
        self.row_ids = np.insert(self.row_ids, pos, memory_id)
        self.row_starts = np.insert(self.row_starts, pos, self.used)
        self.row_lengths = np.insert(self.row_lengths, pos, count)
        self.used += count

    def remove_row(self, memory_id: int) -> bool:
        pos = np.searchsorted(self.row_ids, memory_id)
        if pos >= len(self.row_ids) or self.row_ids[pos] != memory_id:
            return False
        self.row_ids = np.delete(self.row_ids, pos)
        self.row_starts = np.delete(self.row_starts, pos)
        self.row_lengths = np.delete(self.row_lengths, pos)
        place = self.places.pop(memory_id, None)
        if place is not None and self._starting.get((place.stream, place.byte_start)) == memory_id:
            del self._starting[place.stream, place.byte_start]
        if place is not None and place.session is not None:
            self._session_rows[place.session].remove(memory_id)
        self._opening_rows.discard(memory_id)
        return True

    def searchable(self, memory_id: int) -> tuple[np.ndarray, np.ndarray]:
        """(FAISS ids, keys) of a live row's pairs that its index holds."""
        keys = self.row_keys(memory_id)
        if keys is None:
            return np.zeros(0, dtype=np.int64), np.zeros((0, self.head_dim), dtype=np.float16)
        first = 0 if self.search_openings or memory_id not in self._opening_rows else 1
        return token_ids(memory_id, keys.shape[0])[first:], keys[first:]

    def live_searchable(self) -> tuple[np.ndarray, np.ndarray]:
        """(FAISS ids, keys) of every live pair its index holds, in id order."""
        rows, offsets, keys, _ = self.live_pairs()
        held = np.ones(len(rows), dtype=bool)
        if not self.search_openings and self._opening_rows:
            held = ~((offsets == 0) & np.isin(rows, np.fromiter(self._opening_rows, dtype=np.int64)))
        return pair_ids(rows[held], offsets[held]), keys[held]

    def pairs_outside(self, session: Hashable, lo: int, hi: int) -> np.ndarray:
        """Token ids of `session`'s live pairs whose stream positions fall outside [lo, hi).

        A session's rows are added in stream order (the learner reads it in order), so only rows at
        either end are looked at: those holding its first `lo` positions, and those from `hi` on.
        """
        rows = self._session_rows.get(session)
        if not rows:
            return np.zeros(0, dtype=np.int64)
        found = []
        for ordered, wanted in ((rows, lambda start, end: start < lo), (reversed(rows), lambda start, end: end > hi)):
            for row in ordered:
                place, length = self.places[row], self._length(row)
                start, end = place.token_start, place.token_start + length
                if not wanted(start, end):
                    break
                positions = np.arange(start, end)
                offsets = np.nonzero((positions < lo) | (positions >= hi))[0]
                found.append(pair_ids(np.full(len(offsets), row), offsets))
        return np.unique(np.concatenate(found)) if found else np.zeros(0, dtype=np.int64)

    def _length(self, memory_id: int) -> int:
        return int(self.row_lengths[np.searchsorted(self.row_ids, memory_id)])

    def next_row(self, memory_id: int) -> int | None:
        """The live row that continues `memory_id` in its stream, if any."""
        place = self.places.get(memory_id)
        return None if place is None else self._starting.get((place.stream, place.byte_end))

    def row_keys(self, memory_id: int) -> np.ndarray | None:
        """The keys of one live row, or None if it is not (or no longer) here."""
        pos = np.searchsorted(self.row_ids, memory_id)
        if pos >= len(self.row_ids) or self.row_ids[pos] != memory_id:
            return None
        start = self.row_starts[pos]
        return self.keys[start : start + self.row_lengths[pos]]

    def slots(self, rows: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(slot of each (row, offset), whether it is live, index of its row in `row_ids`)."""
        if len(self.row_ids) == 0:
            zeros = np.zeros(rows.shape, dtype=np.int64)
            return zeros, np.zeros(rows.shape, dtype=bool), zeros
        pos = np.minimum(np.searchsorted(self.row_ids, rows), len(self.row_ids) - 1)
        live = (self.row_ids[pos] == rows) & (offsets < self.row_lengths[pos])
        return self.row_starts[pos] + offsets, live, pos

    def live_pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(memory id per token, offset per token, keys, values) of every live pair, in id order."""
        if len(self.row_ids) == 0:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, self.keys[:0], self.values[:0]
        rows = np.repeat(self.row_ids, self.row_lengths)
        starts = np.repeat(self.row_starts, self.row_lengths)
        offsets = np.arange(len(rows)) - np.repeat(np.cumsum(self.row_lengths) - self.row_lengths, self.row_lengths)
        slots = starts + offsets
        return rows, offsets, self.keys[slots], self.values[slots]

    def compact(self) -> None:
        """Drop the holes deleted rows left behind."""
        _, _, keys, values = self.live_pairs()
        self.keys, self.values, self.used = keys.copy(), values.copy(), keys.shape[0]
        self.row_starts = np.cumsum(self.row_lengths) - self.row_lengths

    def _reserve(self, size: int) -> None:
        if size <= self.keys.shape[0]:
            return
        capacity = max(size, 2 * self.keys.shape[0], 1024)
        for name, width in (("keys", self.head_dim), ("values", self._value_dim)):
            grown = np.zeros((capacity, width), dtype=np.float16)
            grown[: self.used] = getattr(self, name)[: self.used]
            setattr(self, name, grown)
