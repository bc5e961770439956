"""What the packages above `models/` need to know of a model, asked of the model instead of its class.

Each model class (`HybridLM`, `TransformerLM`) answers `capabilities` and implements the two questions whose
answers are computations: `downstream_masks()` (what may learn while every stored key and value stays
valid) and `recall_scores(...)` (which memories its reading of a text weighs, and how much).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# "retrieval_block": one block searches the agent's store itself (Memorizing Transformers);
# "memory_layers": global attention layers search per-channel views of it (models.layer_memory).
MemoryAccess = Literal["retrieval_block", "memory_layers"]


@dataclass(frozen=True)
class Capabilities:
    memory: MemoryAccess  # how it reads, and what it writes to, the agent's memory
    pretrained: bool  # imported weights: learning starts from their own default step size (learner.base)
    notes_in_context: bool  # a chat model that reads what its memory recalls as a note in its context
    int8_serving: bool  # its projections can serve as int8 weights (models.quantize)
    windowed_state: bool  # its stream state holds key/value windows, which a learner keeps in bf16
