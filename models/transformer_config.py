"""The frozen config of an imported transformer (Llama and Gemma 3 families), read from its GGUF file or
transformers directory (`models.import_gguf`, `models.import_hf`); `models.transformer` builds from it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from models.layer_memory import PositionRule

Activation = Literal["silu", "gelu_tanh"]


@dataclass(frozen=True)
class TransformerConfig:
    family: str  # "llama" or "gemma3": names the chat format and the import rules
    vocab_size: int
    width: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    mlp_width: int
    sliding_layers: tuple[bool, ...]  # per layer, bottom to top: a sliding-window layer (else global)
    norm_eps: float = 1e-6
    rope_base: float = 10_000.0  # global layers
    local_rope_base: float = 10_000.0  # sliding layers
    sliding_window: int = 4096  # keys a sliding layer's query sees, itself included
    qk_norm: bool = False  # RMSNorm on each head's queries and keys (Gemma 3)
    sandwich_norms: bool = False  # norms after attention and MLP too (Gemma 2/3)
    activation: Activation = "silu"
    scale_embeddings: bool = False  # x sqrt(width) after the lookup (Gemma)
    query_scale: float | None = None  # None: head_dim ** -0.5
    final_soft_cap: float = 0.0
    # Keys a global layer's query sees, sinks included: the stream's working context. Below the
    # model's trained context; longer sessions read older text through lifelong's memory instead.
    # Its state costs per token 2 x layers x kv heads x head dim values (SmolLM2: 46 KB in fp32).
    context_tokens: int = 2048
    # The stream's first tokens a global layer keeps seeing once its context has moved past them.
    sink_tokens: int = 4
    # Global layers that also attend to the top-k pairs of everything older than their context,
    # searched in the agent's memory (models.layer_memory). Chosen when the model is imported.
    memory_layers: tuple[int, ...] = ()
    memory_top_k: int = 32
    memory_positions: PositionRule = "window_edge"

    @property
    def num_layers(self) -> int:
        return len(self.sliding_layers)

    @property
    def memory_channels(self) -> int:
        """Stored (key, value) pairs per token: one per memory layer and key/value head."""
        return len(self.memory_layers) * self.num_kv_heads

    @property
    def memory_searches_openings(self) -> bool:
        """False: a stream's first token is an attention sink, alike in every stream (memory.mirror)."""
        return False

    def window(self, layer: int) -> int:
        return self.sliding_window if self.sliding_layers[layer] else self.context_tokens

    def replace(self, **changes: object) -> TransformerConfig:
        return dataclasses.replace(self, **changes)
