"""Byte-level tokenizer: 256 byte values plus a few special tokens for turns.

Any byte string is representable and decodes back losslessly, whatever its
encoding; specials never collide with bytes because they live at ids >= 256.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable
from enum import IntEnum

import torch


class Special(IntEnum):
    BEGIN = 256  # start of a stream (a session or a document)
    END_OF_TURN = 257  # a speaker finished; generation stops here
    USER = 258
    ASSISTANT = 259
    SYSTEM = 260
    DOCUMENT = 261  # the following bytes are an ingested document


NUM_BYTES = 256
NUM_TOKENS = NUM_BYTES + len(Special)
ROLE_TOKENS = {
    "user": Special.USER,
    "assistant": Special.ASSISTANT,
    "system": Special.SYSTEM,
    "document": Special.DOCUMENT,
}


class ByteTokenizer:
    """Bytes <-> token ids. Stateless; text is UTF-8 encoded on the way in."""

    vocab_size = NUM_TOKENS

    def encode(self, data: bytes | str) -> list[int]:
        if isinstance(data, str):
            data = data.encode("utf-8")
        return list(data)

    def encode_turn(self, role: str, data: bytes | str) -> list[int]:
        """A role marker, the content bytes, then end-of-turn."""
        try:
            marker = ROLE_TOKENS[role]
        except KeyError:
            raise ValueError(f"unknown role {role!r}; use one of {sorted(ROLE_TOKENS)}") from None
        return [int(marker), *self.encode(data), int(Special.END_OF_TURN)]

    def decode(self, tokens: Iterable[int] | torch.Tensor) -> bytes:
        """The bytes of `tokens`; special tokens carry no bytes and are dropped."""
        if isinstance(tokens, torch.Tensor):
            tokens = tokens.flatten().tolist()
        return bytes(t for t in tokens if 0 <= t < NUM_BYTES)

    def tensor(self, data: bytes | str) -> torch.Tensor:
        """`data` as a (1, T) LongTensor, the model's input layout."""
        return torch.tensor([self.encode(data)], dtype=torch.long)


class Utf8Pieces:
    """Turns a stream of byte tokens into text pieces that are always valid UTF-8.

    Bytes of an incomplete character are held back until it completes; bytes
    that can never form a character come out as U+FFFD, so a piece is never
    broken and nothing blocks forever.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token: int) -> str:
        if not 0 <= token < NUM_BYTES:
            return ""
        return self._decoder.decode(bytes([token]))

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)
