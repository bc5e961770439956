"""What a memory row keeps of each token's (key, value) pairs, and their bytes in SQL.

Two formats:
- "fp16": every channel's key and value as fp16, little-endian, (T, channels, D) row-major. A native model's
  retrieval block and an imported model whose memory layers attend to stored pairs read both.
- "keys8:<channels>": only the listed channels' keys, each (token, channel) vector as int8 codes with one fp16
  scale (its largest magnitude / 127), and no values. An imported model whose memory layers do not attend
  (the default) only searches keys, for the note's recall: measured on SmolLM2-135M, the first two memory
  layers' keys find a stated fact as well as all nine layers' pairs did, and int8 codes rank as fp16 keys do
  (BENCHMARKS.md, "A memory a tenth the size"). 396 bytes a token instead of 6,912.

A row says which format it is in (`Memory.pair_format`; NULL for rows written before there was a choice:
"fp16"), so a store reads rows of either, and an older row can be re-encoded in place (`reencode`).

Letters: T tokens, C channels, D head dim.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

FP16 = "fp16"
KEYS8 = "keys8"
# How many of an imported model's memory layers, from the lowest, keep their keys where memory is searched and
# not attended (BENCHMARKS.md, "A memory a tenth the size").
SEARCHED_MEMORY_LAYERS = 2


@dataclass(frozen=True)
class PairFormat:
    """A row's format: the channels it keeps (None: all) and whether as keys-only int8 codes."""

    channels: tuple[int, ...] | None = None  # indices into the model's channels; None with fp16
    keys_only: bool = False

    @classmethod
    def keys8(cls, channels: tuple[int, ...]) -> PairFormat:
        if not channels or sorted(set(channels)) != list(channels) or channels[0] < 0:
            raise ValueError(f"keys8 keeps distinct channels in increasing order, got {channels}")
        return cls(tuple(channels), keys_only=True)

    @property
    def name(self) -> str:
        """As stored in `Memory.pair_format` and exports."""
        return FP16 if not self.keys_only else f"{KEYS8}:{','.join(map(str, self.channels))}"

    @classmethod
    def parse(cls, name: str | None) -> PairFormat:
        """The format a row names (None: a row from before formats, "fp16"); ValueError for an unknown one."""
        if name is None or name == FP16:
            return cls()
        kind, _, channels = name.partition(":")
        if kind != KEYS8 or not channels:
            raise ValueError(f"unknown pair format {name!r}; known: {FP16!r}, '{KEYS8}:<channels>'")
        try:
            return cls.keys8(tuple(int(c) for c in channels.split(",")))
        except ValueError:
            raise ValueError(f"pair format {name!r}: channels must be increasing integers") from None

    def kept(self, channels: int) -> tuple[int, ...]:
        """The channels of a model of `channels` this format keeps."""
        if self.channels is None:
            return tuple(range(channels))
        if self.channels[-1] >= channels:
            raise ValueError(f"pair format {self.name} keeps channels this model of {channels} does not have")
        return self.channels

    def bytes_per_token(self, channels: int, head_dim: int) -> int:
        kept = len(self.kept(channels))
        return kept * (head_dim + 2) if self.keys_only else 2 * kept * head_dim * 2

    # -- bytes ---------------------------------------------------------------------------------

    def encode(self, keys: torch.Tensor | np.ndarray, values: torch.Tensor | np.ndarray) -> tuple[bytes, bytes]:
        """(keys blob, values blob) of a row's pairs, each (T, C, D) or (T, D) for one channel."""
        keys = _numpy(keys)
        if not self.keys_only:
            return _fp16(keys), _fp16(_numpy(values))
        if keys.ndim != 3:
            raise ValueError(f"keys8 encodes (tokens, channels, head dim) keys, got shape {keys.shape}")
        return _int8_codes(keys[:, list(self.kept(keys.shape[1]))]), b""

    def decode(self, keys: bytes, values: bytes, *, tokens: int, channels: int,
               head_dim: int) -> tuple[np.ndarray, np.ndarray | None]:
        """A row's fp16 keys (T, kept, D) and values (or None, keys-only), `channels` the model's, in this
        format's kept channels; ValueError for bytes that do not fit."""
        kept = len(self.kept(channels))
        if not self.keys_only:
            shape = (tokens, channels, head_dim)
            return _from_fp16(keys, shape, "keys"), _from_fp16(values, shape, "values")
        if values:
            raise ValueError(f"a {self.name} row holds no values, got {len(values)} bytes")
        return self.key_codes(keys, tokens=tokens, kept=kept, head_dim=head_dim).decoded(), None

    def key_codes(self, keys: bytes, *, tokens: int, kept: int, head_dim: int) -> KeyCodes:
        """A keys8 row's keys as stored, (T, kept, D) codes and (T, kept) scales; ValueError for bytes that do not
        fit. A keys-only store holds them so in RAM too (memory.mirror): decoded only where read."""
        scales, codes = self._codes(keys, tokens, kept, head_dim)
        return KeyCodes(codes, scales)

    def _codes(self, keys: bytes, tokens: int, kept: int, head_dim: int) -> tuple[np.ndarray, np.ndarray]:
        """A keys8 row's scales (T, kept) and codes (T, kept, D)."""
        scale_bytes = tokens * kept * 2
        if len(keys) != scale_bytes + tokens * kept * head_dim:
            raise ValueError(f"{len(keys)} bytes of keys do not hold {tokens} tokens of {self.name}")
        return (np.frombuffer(keys, dtype="<f2", count=tokens * kept).reshape(tokens, kept),
                np.frombuffer(keys, dtype=np.int8, offset=scale_bytes).reshape(tokens, kept, head_dim))

    def reencode(self, stored: PairFormat, keys: bytes, values: bytes, *, tokens: int, channels: int,
                 head_dim: int) -> tuple[bytes, bytes]:
        """A row stored in `stored`'s format, in this one, as if written in it; ValueError where it lacks what this
        one keeps, or its bytes do not fit its format."""
        if stored == self:
            return keys, values
        if not stored.keys_only:
            full_keys, full_values = stored.decode(keys, values, tokens=tokens, channels=channels, head_dim=head_dim)
            return self.encode(full_keys, full_values)
        if not (self.keys_only and set(self.channels) <= set(stored.channels)):
            raise ValueError(f"a {stored.name} row cannot become {self.name}: it kept less")
        scales, codes = stored._codes(keys, tokens, len(stored.channels), head_dim)
        at = [stored.channels.index(channel) for channel in self.channels]  # codes are per channel: kept exactly
        return np.ascontiguousarray(scales[:, at]).tobytes() + np.ascontiguousarray(codes[:, at]).tobytes(), b""


@dataclass(frozen=True)
class KeyCodes:
    """Keys as keys8 stores them: int8 codes (..., D) and one fp16 scale per key (...); a key is code x scale."""

    codes: np.ndarray
    scales: np.ndarray

    def __len__(self) -> int:
        return self.codes.shape[0]

    def __getitem__(self, at) -> KeyCodes:
        """The codes of some keys (a row's channel, a range of tokens), as numpy indexes them."""
        return KeyCodes(self.codes[at], self.scales[at])

    def decoded(self) -> np.ndarray:
        """The keys as fp16, exactly as `PairFormat.decode` gives them."""
        return (self.codes.astype(np.float32) * self.scales[..., None].astype(np.float32)).astype(np.float16)


# Every channel's key and value, fp16: the format of rows from before formats, and of stores whose values are read.
FULL_PAIRS = PairFormat()


def format_for(config: object, *, attends: bool) -> PairFormat:
    """What the store of a model of `config` keeps: every pair where stored values are read (a retrieval block,
    which has no memory layers; memory layers that attend), else its lowest SEARCHED_MEMORY_LAYERS memory
    layers' keys (channels are memory layers x key/value heads, lowest layer first: models.layer_memory)."""
    layers = getattr(config, "memory_layers", ())
    if attends or not layers:
        return FULL_PAIRS
    return PairFormat.keys8(tuple(range(min(len(layers), SEARCHED_MEMORY_LAYERS) * config.num_kv_heads)))


def _numpy(array: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().to("cpu", torch.float32).numpy()
    return np.asarray(array)


def _fp16(array: np.ndarray) -> bytes:
    return np.ascontiguousarray(array, dtype="<f2").tobytes()


def _from_fp16(blob: bytes, shape: tuple[int, int, int], what: str) -> np.ndarray:
    array = np.frombuffer(blob, dtype="<f2")
    if array.size != shape[0] * shape[1] * shape[2]:
        raise ValueError(f"{array.size} stored {what} do not fill {shape[0]} tokens of {shape[1]} x {shape[2]}")
    return array.reshape(shape)


def _int8_codes(keys: np.ndarray) -> bytes:
    """(T, C, D) keys as fp16 scales (T, C) then int8 codes (T, C, D), made from the keys rounded to fp16 (so an
    fp16 row re-encoded gives the bytes the keys would have given); the scale is rounded to fp16 before the codes
    are made, so decoding multiplies by exactly the scale they were made with."""
    keys = keys.astype(np.float16).astype(np.float32)  # as an fp16 row holds them: re-encoding one gives the same
    scales = (np.abs(keys).max(-1) / 127).astype("<f2")
    safe = np.where(scales > 0, scales.astype(np.float32), 1.0)[..., None]
    codes = np.clip(np.rint(keys / safe), -127, 127).astype(np.int8)
    return scales.tobytes() + codes.tobytes()
