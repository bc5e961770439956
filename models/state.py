"""The streaming state of a whole model, and its versioned byte format.

A session's state is stored in SQL between turns, so the format is explicit:
MAGIC | u16 format version | 32-byte BLAKE2b digest of the payload | payload,
where the payload is safetensors (tensors + string metadata). Nothing is pickled.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from typing import NamedTuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from models.attention import AttentionState
from models.layers import RecurrentState
from models.retrieval import RetrievalState


class KVState(NamedTuple):
    """A pretrained transformer layer's window (models.transformer)."""

    keys: torch.Tensor  # (B, K, C, E) un-rotated keys of the last C tokens, oldest first
    values: torch.Tensor  # (B, K, C, E)


LayerState = RecurrentState | AttentionState | RetrievalState | KVState

MAGIC = b"LLSTATE"
# 2: the retrieval block's state carries what its last token recalled. Version 1 blobs are still read:
# their retrieval block has an attention state, which the block reads as having recalled nothing
# (RetrievalAttention.readable_state).
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
_KINDS: dict[str, type] = {"recurrent": RecurrentState, "attention": AttentionState, "retrieval": RetrievalState,
                           "kv": KVState}
# What a blob without a recorded tokenizer was read with (every state before tokenizers were recorded).
LEGACY_TOKENIZER = "bytes"
_HEADER = struct.Struct("<7sH32s")


class StateFormatError(ValueError):
    """A stored state blob that cannot be read back: corrupted, truncated or from another format."""


@dataclass(frozen=True)
class State:
    layers: tuple[LayerState, ...]  # one per residual block, bottom to top
    position: int  # tokens consumed since the stream began
    tokenizer: str = LEGACY_TOKENIZER  # the name of the vocabulary its tokens came from (Tokenizer.name)

    def check_tokenizer(self, name: str) -> None:
        """ValueError unless this state was made with the vocabulary `name`."""
        if self.tokenizer != name:
            raise ValueError(f"state was made with tokenizer {self.tokenizer!r}, this model reads {name!r}: "
                             "it belongs to another model")

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for layer in self.layers for t in layer)

    @property
    def batch_size(self) -> int:
        return self.layers[0][0].shape[0]

    def to(self, device: torch.device | str) -> State:
        layers = tuple(type(layer)(*(t.to(device) for t in layer)) for layer in self.layers)
        return State(layers=layers, position=self.position, tokenizer=self.tokenizer)

    def detach(self) -> State:
        layers = tuple(type(layer)(*(t.detach() for t in layer)) for layer in self.layers)
        return State(layers=layers, position=self.position, tokenizer=self.tokenizer)

    def to_bytes(self) -> bytes:
        tensors: dict[str, torch.Tensor] = {}
        kinds = []
        for i, layer in enumerate(self.layers):
            kinds.append(layer_kind(layer))
            for name, tensor in layer._asdict().items():
                tensors[f"{i}.{name}"] = tensor.detach().to("cpu").contiguous()
        metadata = {"position": str(self.position), "kinds": json.dumps(kinds), "tokenizer": self.tokenizer}
        payload = save_tensors(tensors, metadata=metadata)
        return _HEADER.pack(MAGIC, FORMAT_VERSION, hashlib.blake2b(payload, digest_size=32).digest()) + payload

    @classmethod
    def from_bytes(cls, blob: bytes) -> State:
        if len(blob) < _HEADER.size:
            raise StateFormatError(f"state blob is {len(blob)} bytes, shorter than its {_HEADER.size}-byte header")
        magic, version, digest = _HEADER.unpack_from(blob)
        if magic != MAGIC:
            raise StateFormatError("not a lifelong state blob (bad magic bytes)")
        if version not in READABLE_VERSIONS:
            raise StateFormatError(
                f"state format version {version} is not supported (this build reads versions "
                f"{', '.join(map(str, READABLE_VERSIONS))}); "
                "start a new session or convert the state with the matching release"
            )
        payload = blob[_HEADER.size :]
        if hashlib.blake2b(payload, digest_size=32).digest() != digest:
            raise StateFormatError("state blob is corrupted: checksum mismatch")
        try:
            tensors = load_tensors(payload)
            metadata = _read_metadata(payload)
            kinds = json.loads(metadata["kinds"])
            layers = tuple(_layer_from(kind, i, tensors) for i, kind in enumerate(kinds))
            return cls(layers=layers, position=int(metadata["position"]),
                       tokenizer=metadata.get("tokenizer", LEGACY_TOKENIZER))
        except (SafetensorError, KeyError, ValueError) as exc:
            raise StateFormatError(f"state blob is malformed: {exc}") from exc


def _read_metadata(payload: bytes) -> dict[str, str]:
    (header_len,) = struct.unpack_from("<Q", payload)
    return json.loads(payload[8 : 8 + header_len])["__metadata__"]


def layer_kind(layer: LayerState) -> str:
    return next(kind for kind, layer_type in _KINDS.items() if isinstance(layer, layer_type))


def _layer_from(kind: str, index: int, tensors: dict[str, torch.Tensor]) -> LayerState:
    layer_type = _KINDS[kind]
    return layer_type(*(tensors[f"{index}.{name}"] for name in layer_type._fields))
