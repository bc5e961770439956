"""What every model does after its last layer: cap the logits, score the next token."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_cap(logits: torch.Tensor, cap: float) -> torch.Tensor:
    """cap * tanh(logits / cap), as Griffin and Gemma 2 bound their logits; 0 leaves them as they are."""
    return torch.tanh(logits / cap) * cap if cap else logits


def next_token_loss(log_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross entropy in nats; bits per byte is this / ln 2 times tokens per byte. The inputs are
    log-probabilities already: `cross_entropy` would normalize them a second time (a 49K-word vocabulary made
    that a third of a learning step's time beside the model's products, and its gradient as much again)."""
    return F.nll_loss(log_probs.reshape(-1, log_probs.shape[-1]), targets.reshape(-1))
