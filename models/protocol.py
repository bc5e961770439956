"""`LanguageModel`: the one interface the packages above `models/` use, whatever the architecture.

`HybridLM` (the native byte-level hybrid, and RecurrentGemma) and `TransformerLM` (Llama, Gemma 3)
implement it; a new family implements it too, and nothing above `models/` asks a model for its class
(tests/test_layering.py fails if something does).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import torch
from torch import nn

from models.capabilities import Capabilities
from models.memory import MemoryReader
from models.model import ModelOutput
from models.state import State
from models.tokenizer import Tokenizer


class LanguageModel(Protocol):
    tokenizer: Tokenizer  # its vocabulary and chat format
    config: Any  # its frozen config (models.config.ModelConfig or models.transformer_config.TransformerConfig)
    capabilities: Capabilities  # what it can do, asked instead of its class

    @property
    def device(self) -> torch.device: ...

    @property
    def retrieval_block(self) -> nn.Module | None: ...

    def init_state(self, batch_size: int = 1) -> State: ...

    def __call__(self, tokens: torch.Tensor, state: State | None = None, memory: MemoryReader | Any | None = None,
                 *, last_only: bool = False) -> ModelOutput: ...

    def downstream_masks(self) -> dict[str, torch.Tensor | None]: ...

    def add_adapters(self, rank: int) -> list[str]: ...

    def recall_scores(self, tokens: torch.Tensor, memory: Any,
                      state: State | None = None) -> tuple[torch.Tensor, torch.Tensor]: ...

    def named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]: ...

    def parameters(self) -> Iterator[nn.Parameter]: ...
