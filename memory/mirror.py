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
from memory.pair_format import KeyCodes


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
    """A view's pairs by row, and which of them its index holds (`searchable`). A mirror of a keys-only
    store (`values=False`, memory.pair_format) holds keys alone, as the int8 codes and scales its rows store
    them (66 bytes a key where fp16 takes 128; decoded where read, to the same fp16 a row decodes to), and reads
    zeros where values are asked for.

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
        # fp16 keys where values are kept, else the keys' int8 codes and fp16 scales (`keys_at` decodes).
        self.keys = np.zeros((0, head_dim if values else 0), dtype=np.float16)
        self.codes = np.zeros((0, 0 if values else head_dim), dtype=np.int8)
        self.scales = np.zeros(0, dtype=np.float16)
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

    def keys_at(self, slots: np.ndarray) -> np.ndarray:
        """The fp16 keys in `slots`, (*slots.shape, D)."""
        if self.holds_values:
            return self.keys[slots]
        return KeyCodes(self.codes[slots], self.scales[slots]).decoded()

    def inner_products(self, queries: np.ndarray, slots: np.ndarray) -> np.ndarray:
        """Each query's inner product (N,) x (N, K) with the keys in its `slots` (N, K), in fp32; a keys-only mirror
        multiplies codes, then scales, so no key is widened to fp16 and back."""
        if self.holds_values:
            return np.matmul(self.keys[slots].astype(np.float32), queries[:, :, None])[..., 0]
        codes = self.codes[slots].astype(np.float32)  # int8 widens fast; fp16 would not
        return np.matmul(codes, queries[:, :, None])[..., 0] * self.scales[slots].astype(np.float32)

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

    @property
    def nbytes(self) -> int:
        """Bytes of its pair arrays, free slots included."""
        return self.keys.nbytes + self.codes.nbytes + self.scales.nbytes + self.values.nbytes

    def add_row(self, memory_id: int, keys: np.ndarray | KeyCodes, values: np.ndarray | None,
                place: RowPlace | None = None) -> None:
        """`keys`: fp16 (T, D), or as codes (a keys-only mirror takes only these); `values`: None (or anything) where
        the mirror holds none."""
        if self.holds_values and isinstance(keys, KeyCodes):
            keys = keys.decoded()
        elif not self.holds_values and not isinstance(keys, KeyCodes):
            raise TypeError("a keys-only mirror holds keys as their stored codes: give it KeyCodes")
        count = len(keys)
        if place is not None and place.stream is not None:
            self.places[memory_id] = place
            self._starting[place.stream, place.byte_start] = memory_id
            if place.session is not None:
                self._session_rows.setdefault(place.session, []).append(memory_id)
                if place.token_start == 0:
                    self._opening_rows.add(memory_id)
        self._reserve(self.used + count)
        written = slice(self.used, self.used + count)
        if self.holds_values:
            self.keys[written], self.values[written] = keys, values
        else:
            self.codes[written], self.scales[written] = keys.codes, keys.scales
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
        return self.keys_at(np.arange(start, start + self.row_lengths[pos]))

    def slots(self, rows: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(slot of each (row, offset), whether it is live, index of its row in `row_ids`)."""
        if len(self.row_ids) == 0:
            zeros = np.zeros(rows.shape, dtype=np.int64)
            return zeros, np.zeros(rows.shape, dtype=bool), zeros
        pos = np.minimum(np.searchsorted(self.row_ids, rows), len(self.row_ids) - 1)
        live = (self.row_ids[pos] == rows) & (offsets < self.row_lengths[pos])
        return self.row_starts[pos] + offsets, live, pos

    def live_slots(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(memory id, offset, slot) of every live pair, in id order."""
        rows = np.repeat(self.row_ids, self.row_lengths)
        starts = np.repeat(self.row_starts, self.row_lengths)
        offsets = np.arange(len(rows)) - np.repeat(np.cumsum(self.row_lengths) - self.row_lengths, self.row_lengths)
        return rows, offsets, starts + offsets

    def live_pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(memory id per token, offset per token, fp16 keys, values) of every live pair, in id order."""
        rows, offsets, slots = self.live_slots()
        return rows, offsets, self.keys_at(slots), self.values[slots]

    def stored(self, slots: np.ndarray) -> dict[str, np.ndarray]:
        """The arrays the mirror keeps, at `slots`, by name (a snapshot saves these; `add_stored` reads them back)."""
        return {name: array[slots] for name, array in self._arrays().items()}

    def add_stored(self, memory_id: int, stored: dict[str, np.ndarray], place: RowPlace | None) -> None:
        """One row from arrays as `stored` gives them."""
        keys = stored["keys"] if self.holds_values else KeyCodes(stored["codes"], stored["scales"])
        self.add_row(memory_id, keys, stored["values"], place)

    def compact(self) -> None:
        """Drop the holes deleted rows left behind."""
        _, _, slots = self.live_slots()
        for name, array in self.stored(slots).items():
            setattr(self, name, array)
        self.used = len(slots)
        self.row_starts = np.cumsum(self.row_lengths) - self.row_lengths

    def _arrays(self) -> dict[str, np.ndarray]:
        """The arrays this kind of mirror fills, one slot per row (values: zero-width where none are kept)."""
        if self.holds_values:
            return {"keys": self.keys, "values": self.values}
        return {"codes": self.codes, "scales": self.scales, "values": self.values}

    def _reserve(self, size: int) -> None:
        capacity = self.values.shape[0]
        if size <= capacity:
            return
        capacity = max(size, 2 * capacity, 1024)
        for name, array in self._arrays().items():
            grown = np.zeros((capacity, *array.shape[1:]), dtype=array.dtype)
            grown[: self.used] = array[: self.used]
            setattr(self, name, grown)
