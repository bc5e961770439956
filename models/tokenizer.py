"""Tokenizers: the one seam between raw bytes and a model's token ids.

Events are raw bytes; a model reads token ids. Every tokenizer says which bytes each token stands
for (`token_bytes`: empty for control tokens such as turn markers), so the byte span of any run of
tokens is exact and memories keep byte offsets whatever the vocabulary. Each also carries its
model's chat format: the tokens around a turn, what starts a stream, what stops a reply.

`ByteTokenizer` is the byte-level vocabulary of the project's own models: 256 byte values plus a
few special tokens at ids >= 256, so any byte string round-trips losslessly. Imported models bring
their own vocabulary (models.vocab).
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

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
ROLES = ("user", "assistant", "system", "document")


@dataclass(frozen=True)
class ChatFormat:
    """How a model's streams are laid out in its own tokens (its chat template, as token runs).

    A chat stream is `chat_start`, then per turn `turn_prefix[role]`, the content's tokens and
    `turn_end`; a reply is sampled after `turn_prefix["assistant"]` until a token of `stop_tokens`
    (not read) or the byte budget, and closed by reading `turn_end`. A document stream is
    `document_start`, then the document's tokens.
    """

    chat_start: tuple[int, ...]
    document_start: tuple[int, ...]
    turn_prefix: Mapping[str, tuple[int, ...]]
    turn_end: tuple[int, ...]
    stop_tokens: frozenset[int]

    def prefix(self, role: str) -> tuple[int, ...]:
        try:
            return self.turn_prefix[role]
        except KeyError:
            raise ValueError(f"unknown role {role!r}; use one of {sorted(self.turn_prefix)}") from None


class Tokenizer(Protocol):
    """What the stack needs of a vocabulary. `name` identifies it exactly: states record it."""

    name: str
    vocab_size: int
    chat: ChatFormat

    def encode(self, data: bytes | str) -> list[int]:
        """Content tokens; text that looks like a special token stays text (no injection)."""
        ...

    def token_bytes(self, token: int) -> bytes:
        """The bytes `token` stands for; b"" for control tokens."""
        ...

    def generatable(self) -> torch.Tensor:
        """(vocab_size,) bool: tokens a reply may contain (content tokens and the stop tokens)."""
        ...


def decode(tokenizer: Tokenizer, tokens: Iterable[int] | torch.Tensor) -> bytes:
    """The bytes of `tokens`; control tokens carry none."""
    if isinstance(tokens, torch.Tensor):
        tokens = tokens.flatten().tolist()
    return b"".join(tokenizer.token_bytes(t) for t in tokens)


def encode_turn(tokenizer: Tokenizer, role: str, data: bytes | str) -> list[int]:
    """One whole turn in the tokenizer's chat format: role prefix, content, turn end."""
    return [*tokenizer.chat.prefix(role), *tokenizer.encode(data), *tokenizer.chat.turn_end]


def byte_starts(tokenizer: Tokenizer, tokens: Iterable[int], first: int) -> list[int]:
    """Stream byte offset before each token and after the last, the first token starting at `first`."""
    starts = [first]
    for token in tokens:
        starts.append(starts[-1] + len(tokenizer.token_bytes(token)))
    return starts


class ByteTokenizer:
    """Bytes <-> token ids. Stateless; text is UTF-8 encoded on the way in."""

    name = "bytes"
    vocab_size = NUM_TOKENS
    chat = ChatFormat(
        chat_start=(int(Special.BEGIN),),
        document_start=(int(Special.BEGIN), int(Special.DOCUMENT)),
        turn_prefix={"user": (int(Special.USER),), "assistant": (int(Special.ASSISTANT),),
                     "system": (int(Special.SYSTEM),), "document": (int(Special.DOCUMENT),)},
        turn_end=(int(Special.END_OF_TURN),),
        stop_tokens=frozenset({int(Special.END_OF_TURN)}),
    )

    def encode(self, data: bytes | str) -> list[int]:
        if isinstance(data, str):
            data = data.encode("utf-8")
        return list(data)

    def encode_turn(self, role: str, data: bytes | str) -> list[int]:
        """A role marker, the content bytes, then end-of-turn."""
        return encode_turn(self, role, data)

    def token_bytes(self, token: int) -> bytes:
        return bytes([token]) if 0 <= token < NUM_BYTES else b""

    def decode(self, tokens: Iterable[int] | torch.Tensor) -> bytes:
        """The bytes of `tokens`; special tokens carry no bytes and are dropped."""
        return decode(self, tokens)

    def generatable(self) -> torch.Tensor:
        allowed = torch.zeros(self.vocab_size, dtype=torch.bool)
        allowed[:NUM_BYTES] = True
        allowed[int(Special.END_OF_TURN)] = True
        return allowed

    def tensor(self, data: bytes | str) -> torch.Tensor:
        """`data` as a (1, T) LongTensor, the model's input layout."""
        return torch.tensor([self.encode(data)], dtype=torch.long)


class Utf8Pieces:
    """Turns a stream of token bytes into text pieces that are always valid UTF-8.

    Bytes of an incomplete character are held back until it completes; bytes
    that can never form a character come out as U+FFFD, so a piece is never
    broken and nothing blocks forever.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, data: bytes) -> str:
        return self._decoder.decode(data) if data else ""

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)
