"""Model configuration: one frozen dataclass and its named presets."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Literal

BlockType = Literal["recurrent", "attention", "retrieval"]
BLOCK_TYPES: tuple[str, ...] = ("recurrent", "attention", "retrieval")


@dataclass(frozen=True)
class ModelConfig:
    # Token ids the embedding can hold; byte-level default is 256 bytes + specials, padded to 8.
    vocab_size: int = 264
    # Residual stream width; every block reads and writes this many features.
    width: int = 256
    # Attention heads, and the number of diagonal blocks of the RG-LRU gates (Griffin ties them).
    num_heads: int = 4
    # Hidden width of the gated MLP in every residual block.
    mlp_expanded_width: int = 768
    # Width of the RG-LRU branch; None means `width`, as in Griffin.
    lru_width: int | None = None
    # Temporal mixing of each residual block, bottom to top (Griffin: recurrent, recurrent, attention).
    block_types: tuple[str, ...] = ("recurrent", "recurrent", "attention")
    # Sliding window W: a query sees itself and the W tokens before it.
    attention_window: int = 512
    # Width of the depthwise temporal convolution before the RG-LRU.
    conv_width: int = 4
    # tanh soft cap on the logits (Griffin uses 30); 0 disables it.
    logits_soft_cap: float = 30.0
    # Scale input embeddings by sqrt(width), as Griffin does with tied embeddings.
    embeddings_scale_by_sqrt_dim: bool = True
    # Nearest (key, value) pairs the retrieval block fetches per query and head.
    memory_top_k: int = 32
    # Searches in a row that may miss the next pair of a recalled run before it is no longer
    # followed; each costs a lookup of K pairs per token (see RetrievalAttention).
    memory_follow_hops: int = 4
    # Largest RoPE wavelength; RoPE rotates the first half of each head's features.
    rope_max_wavelength: int = 10_000

    def __post_init__(self) -> None:
        problems = []
        if self.width % self.num_heads:
            problems.append(f"width {self.width} is not divisible by num_heads {self.num_heads}")
        if self.resolved_lru_width % self.num_heads:
            problems.append(f"lru_width {self.resolved_lru_width} is not divisible by num_heads {self.num_heads}")
        if self.head_dim % 4:
            problems.append(f"head_dim {self.head_dim} must be a multiple of 4 for RoPE on half the features")
        unknown = [b for b in self.block_types if b not in BLOCK_TYPES]
        if unknown:
            problems.append(f"unknown block types {unknown}; use {BLOCK_TYPES}")
        if self.block_types.count("retrieval") > 1:
            problems.append("at most one retrieval block is supported")
        if self.attention_window < 1 or self.conv_width < 1 or self.memory_top_k < 1 or self.memory_follow_hops < 1:
            problems.append("attention_window, conv_width, memory_top_k and memory_follow_hops must be positive")
        if problems:
            raise ValueError("invalid ModelConfig: " + "; ".join(problems))

    @property
    def head_dim(self) -> int:
        return self.width // self.num_heads

    @property
    def resolved_lru_width(self) -> int:
        return self.lru_width or self.width

    @property
    def num_layers(self) -> int:
        return len(self.block_types)

    @property
    def memory_channels(self) -> int:
        """Stored (key, value) pairs per token: the retrieval block's one (models.transformer has several)."""
        return 1

    @property
    def memory_searches_openings(self) -> bool:
        """Whether streams' first pairs are searched: the retrieval block was trained on every pair."""
        return True

    @property
    def retrieval_layer(self) -> int | None:
        return self.block_types.index("retrieval") if "retrieval" in self.block_types else None

    def replace(self, **changes: object) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        fields = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(fields) - known
        if unknown:
            raise ValueError(f"unknown ModelConfig fields {sorted(unknown)}")
        fields["block_types"] = tuple(fields["block_types"])
        return cls(**fields)

    @classmethod
    def preset(cls, name: str) -> ModelConfig:
        try:
            return PRESETS[name]
        except KeyError:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None


PRESETS: dict[str, ModelConfig] = {
    # Fast enough for unit tests on a 2-core CPU; small window so tests cross it often.
    "tiny": ModelConfig(
        width=64,
        num_heads=2,
        mlp_expanded_width=128,
        block_types=("recurrent", "attention", "recurrent", "retrieval"),
        attention_window=32,
        memory_top_k=8,
    ),
    # The CPU default: ~5M parameters, trains and serves on two cores.
    "small": ModelConfig(
        width=256,
        num_heads=4,
        mlp_expanded_width=768,
        block_types=("recurrent", "recurrent", "attention", "recurrent", "recurrent", "retrieval"),
        attention_window=512,
        memory_top_k=32,
    ),
    # For a GPU: ~85M parameters, Griffin's 2:1 pattern with retrieval near the top.
    "base": ModelConfig(
        width=768,
        num_heads=12,
        mlp_expanded_width=2304,
        block_types=("recurrent", "recurrent", "attention") * 3
        + ("recurrent", "retrieval", "recurrent"),
        attention_window=1024,
        memory_top_k=32,
    ),
}
