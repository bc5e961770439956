"""The one call shape of every temporal block: `forward(x, state, context) -> BlockOutput`.

A residual block does not know which kind of temporal mixing it holds (recurrence, windowed
attention, retrieval, or an imported architecture's layer): each reads what it needs from the
context and answers the same output, so a new architecture is a new block, not a new branch.

Letters: B batch, T time, D width.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

import torch

from models.memory import MemoryKV, MemoryReader
from models.pointer import MemoryPointer


@dataclass(frozen=True)
class BlockContext:
    """What a chunk's temporal blocks may read besides their own input and state."""

    position: int  # tokens the stream had read before this chunk (0: the stream starts here)
    tokens: torch.Tensor  # (B, T) int64, the chunk's input tokens
    memory: MemoryReader | None  # the agent's retrieval memory; None reads without one


class BlockOutput(NamedTuple):
    x: torch.Tensor  # (B, T, D) what the block adds to the residual stream
    state: tuple  # the block's state after the chunk (a LayerState)
    memory_kv: MemoryKV | None = None  # pairs the chunk contributes to memory; only a retrieval block has them
    pointer: MemoryPointer | None = None  # what the memory said at each step; only with a memory


class TemporalBlock(Protocol):
    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> tuple: ...

    def forward(self, x: torch.Tensor, state: tuple, context: BlockContext) -> BlockOutput: ...
