"""Imported models' vocabularies, read from the model's own files and run by the `tokenizers` library.

Two kinds cover the targets: byte-level BPE with explicit merges (GPT-2 style, SmolLM2/Llama)
and SentencePiece-style BPE with per-piece scores and byte fallback (Gemma). Control tokens
(turn markers, BOS, EOS) are never produced from content: a user typing "<|im_start|>" gets
the text, not the marker. Every token maps to exact bytes, and `encode` checks that the tokens
spell its input back, so byte offsets computed from tokens are exact.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from functools import cached_property

import torch
from tokenizers import AddedToken, Regex, normalizers, pre_tokenizers
from tokenizers import Tokenizer as RustTokenizer
from tokenizers import models as tk_models

from models.tokenizer import ChatFormat

SPM_SPACE = "\u2581"  # SentencePiece's visible space


class TokenType(IntEnum):
    """llama.cpp's token types, as GGUF files store them."""

    NORMAL = 1
    UNKNOWN = 2
    CONTROL = 3
    USER_DEFINED = 4
    UNUSED = 5
    BYTE = 6


@dataclass(frozen=True)
class VocabSpec:
    """A vocabulary as model files describe it (GGUF's tokenizer.ggml.* keys, or tokenizer.json)."""

    kind: str  # "bpe" (byte-level, merges) or "spm" (SentencePiece pieces with scores, byte fallback)
    tokens: Sequence[str]
    types: Sequence[int]
    merges: Sequence[tuple[str, str]] = ()
    scores: Sequence[float] = ()
    split_digits: bool = False


def _gpt2_byte_chars() -> dict[str, int]:
    """GPT-2's printable stand-in character for each byte value, inverted: char -> byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            chars[chr(byte)] = byte
        else:
            chars[chr(256 + extra)] = byte
            extra += 1
    return chars


def _spm_merges(tokens: Sequence[str], scores: Sequence[float], types: Sequence[int]) -> list[tuple[str, str]]:
    """BPE merges equivalent to SentencePiece's score-ordered merging: every way to split a normal
    piece into two pieces of the vocabulary is a merge, ranked by the merged piece's score."""
    ids = {piece: i for i, piece in enumerate(tokens) if types[i] == TokenType.NORMAL}
    ranked = []
    for piece, index in ids.items():
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in ids and right in ids:
                ranked.append((-scores[index], ids[left], ids[right], left, right))
    ranked.sort()
    return [(left, right) for _, _, _, left, right in ranked]


# Per vocabulary kind: the library tokenizer, the bytes of every token (b"" for control tokens), and
# the token of each byte value the vocabulary holds alone (for bytes that are not UTF-8).
Built = tuple[RustTokenizer, list[bytes], dict[int, int]]
SILENT = (TokenType.CONTROL, TokenType.UNKNOWN, TokenType.UNUSED)  # tokens that stand for no bytes


def _byte_level(spec: VocabSpec) -> Built:
    """GPT-2 style: every piece spells bytes through printable stand-in characters; merges given."""
    byte_chars = _gpt2_byte_chars()
    vocab = {piece: i for i, piece in enumerate(spec.tokens)}
    token_bytes = [b"" if kind in SILENT else bytes(byte_chars[c] for c in piece)
                   if all(c in byte_chars for c in piece) else piece.encode()
                   for piece, kind in zip(spec.tokens, spec.types)]
    chars_of = {byte: char for char, byte in byte_chars.items()}
    byte_tokens = {b: vocab[chars_of[b]] for b in range(256) if chars_of[b] in vocab}
    rust = RustTokenizer(tk_models.BPE(vocab=vocab, merges=list(spec.merges), ignore_merges=False))
    steps = [pre_tokenizers.Digits(individual_digits=True)] if spec.split_digits else []
    rust.pre_tokenizer = pre_tokenizers.Sequence([*steps, pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                                                    use_regex=True)])
    return rust, token_bytes, byte_tokens


def _sentencepiece(spec: VocabSpec) -> Built:
    """SentencePiece style: "\u2581" for spaces, <0xNN> byte fallback, merges from scores if not given."""
    vocab = {piece: i for i, piece in enumerate(spec.tokens)}
    token_bytes = [bytes([int(piece[3:5], 16)]) if kind == TokenType.BYTE else b"" if kind in SILENT
                   else piece.replace(SPM_SPACE, " ").encode() for piece, kind in zip(spec.tokens, spec.types)]
    byte_tokens = {b: vocab[f"<0x{b:02X}>"] for b in range(256) if f"<0x{b:02X}>" in vocab}
    unknown = spec.tokens[spec.types.index(TokenType.UNKNOWN)] if TokenType.UNKNOWN in spec.types else None
    merges = list(spec.merges) or _spm_merges(spec.tokens, spec.scores, spec.types)
    rust = RustTokenizer(tk_models.BPE(vocab=vocab, merges=merges, byte_fallback=True, fuse_unk=True,
                                       unk_token=unknown))
    rust.normalizer = normalizers.Replace(" ", SPM_SPACE)
    rust.pre_tokenizer = pre_tokenizers.Split(Regex(" "), behavior="merged_with_previous")
    # Pieces SentencePiece matches whole before merging (runs of newlines, spaces).
    rust.add_tokens([AddedToken(piece, normalized=False, special=False)
                     for piece, kind in zip(spec.tokens, spec.types) if kind == TokenType.USER_DEFINED])
    return rust, token_bytes, byte_tokens


class PretrainedTokenizer:
    """A `models.tokenizer.Tokenizer` over an imported vocabulary; `chat` comes from the model family
    (models.chat_formats), built with this tokenizer's own `encode`. Its name is `model` plus a digest
    of the vocabulary, so a state records exactly which vocabulary made it."""

    def __init__(self, spec: VocabSpec, model: str, chat: Callable[[PretrainedTokenizer], ChatFormat]):
        self.spec, self.name = spec, f"{model}:{vocab_digest(spec)}"
        self.vocab_size = len(spec.tokens)
        if spec.kind == "bpe":
            self._rust, self._bytes, self._byte_tokens = _byte_level(spec)
        elif spec.kind == "spm":
            self._rust, self._bytes, self._byte_tokens = _sentencepiece(spec)
        else:
            raise ValueError(f"unknown vocabulary kind {spec.kind!r}; expected 'bpe' or 'spm'")
        self.chat = chat(self)

    def token_bytes(self, token: int) -> bytes:
        return self._bytes[token] if 0 <= token < self.vocab_size else b""

    def encode(self, data: bytes | str) -> list[int]:
        if isinstance(data, str):
            data = data.encode("utf-8")
        tokens: list[int] = []
        for text, raw in _utf8_runs(data):
            if raw:
                tokens += self._spell_bytes(raw)
            elif text:
                tokens += self._encode_text(text)
        return tokens

    def _encode_text(self, text: str) -> list[int]:
        if self.spec.kind == "spm" and SPM_SPACE in text:
            # A literal U+2581 would read back as a space: spell it in byte tokens instead.
            out: list[int] = []
            for i, part in enumerate(text.split(SPM_SPACE)):
                if i:
                    out += self._spell_bytes(SPM_SPACE.encode())
                out += self._encode_text(part) if part else []
            return out
        tokens = self._rust.encode(text, add_special_tokens=False).ids
        if b"".join(self._bytes[t] for t in tokens) != text.encode():
            lost = sorted({c for c in text if self._rust.encode(c, add_special_tokens=False).ids == []})
            raise ValueError(f"this model's vocabulary ({self.name}) cannot spell the characters {lost[:5]!r}")
        return tokens

    def _spell_bytes(self, raw: bytes) -> list[int]:
        missing = sorted({b for b in raw if b not in self._byte_tokens})
        if missing:
            raise ValueError(f"this model's vocabulary ({self.name}) cannot spell the bytes "
                             f"{', '.join(f'0x{b:02x}' for b in missing[:5])}")
        return [self._byte_tokens[b] for b in raw]

    def generatable(self) -> torch.Tensor:
        return self._generatable.clone()

    @cached_property
    def _generatable(self) -> torch.Tensor:
        allowed = torch.tensor([bool(b) for b in self._bytes], dtype=torch.bool)
        allowed[list(self.chat.stop_tokens)] = True
        return allowed


def _utf8_runs(data: bytes) -> list[tuple[str, bytes]]:
    """`data` as alternating runs: (text, b"") for valid UTF-8, ("", raw) for bytes that are not."""
    runs: list[tuple[str, bytes]] = []
    while data:
        try:
            runs.append((data.decode("utf-8"), b""))
            break
        except UnicodeDecodeError as bad:
            if bad.start:
                runs.append((data[: bad.start].decode("utf-8"), b""))
            runs.append(("", data[bad.start : bad.end]))
            data = data[bad.end :]
    return runs


def hf_vocab(tokenizer_json: dict) -> VocabSpec:
    """A VocabSpec from a transformers tokenizer.json (BPE models: byte-level, or with byte fallback)."""
    model = tokenizer_json["model"]
    if model.get("type") != "BPE":
        raise ValueError(f"tokenizer.json model {model.get('type')!r} is not supported (BPE only)")
    if "Prepend" in json.dumps(tokenizer_json.get("normalizer")):
        raise ValueError("SentencePiece vocabularies with a space prefix are not supported")
    tokens = [""] * (max(model["vocab"].values()) + 1)
    for piece, index in model["vocab"].items():
        tokens[index] = piece
    spm = bool(model.get("byte_fallback"))
    types = [TokenType.BYTE if spm and len(p) == 6 and p.startswith("<0x") and p.endswith(">") else TokenType.NORMAL
             for p in tokens]
    for added in tokenizer_json.get("added_tokens", []):
        while added["id"] >= len(tokens):
            tokens.append("")
            types.append(TokenType.UNUSED)
        tokens[added["id"]] = added["content"]
        types[added["id"]] = TokenType.CONTROL if added["special"] else TokenType.USER_DEFINED
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    digits = '"individual_digits": true' in json.dumps(tokenizer_json.get("pre_tokenizer"))
    return VocabSpec("spm" if spm else "bpe", tokens, types, merges=merges, split_digits=digits)


def vocab_digest(spec: VocabSpec) -> str:
    """A short digest of a vocabulary: states record it, so another vocabulary cannot read them."""
    digest = hashlib.sha256(spec.kind.encode())
    for piece in spec.tokens:
        digest.update(piece.encode() + b"\0")
    for left, right in spec.merges:
        digest.update(f"{left} {right}\0".encode())
    return digest.hexdigest()[:12]


def piece_ids(spec: VocabSpec, pieces: Mapping[str, str]) -> dict[str, int]:
    """Ids of named pieces ({"im_start": "<|im_start|>"}); ValueError naming any the vocabulary lacks."""
    index = {piece: i for i, piece in enumerate(spec.tokens)}
    missing = [piece for piece in pieces.values() if piece not in index]
    if missing:
        raise ValueError(f"the vocabulary lacks the chat format's tokens {missing}")
    return {name: index[piece] for name, piece in pieces.items()}
