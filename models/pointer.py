"""What the memory says about the next token, and how it joins the model's own prediction.

The retrieval block's memory share and the tokens its recalled pairs name form a pointer
distribution; the model's output is the pointer-sentinel mixture of that and its own softmax,
with the window playing the sentinel (see models.retrieval).

Letters: B batch, T time, H heads, K recalled pairs, V vocabulary.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F


class MemoryPointer(NamedTuple):
    """What the memory says about each position's next token, for the model's output mixture.

    Per head, the memory's share of the joint softmax over [window, retrieved pairs] is the
    weight of a pointer distribution over the tokens the retrieved pairs name.
    """

    # (B, T, H) fp32: log-odds of memory against the window in each head's joint softmax, so the
    # memory's share is its sigmoid; -inf where nothing was found.
    share_logit: torch.Tensor
    weights: torch.Tensor  # (B, T, H, K) fp32, each head's softmax over the retrieved pairs
    tokens: torch.Tensor  # (B, T, K) int64, the token each retrieved pair says followed its context
    # Provenance, for whoever asks which memories were used (admin recall), found or followed:
    ids: torch.Tensor  # (B, T, K) int64, the retrieved pairs' ids; -1 where a slot holds none
    match: torch.Tensor  # (B, T, K) fp32, each pair's cosine match (a run's mean where that is higher)

    def pair_shares(self) -> torch.Tensor:
        """(B, T, K) each retrieved pair's weight in the output distribution: its copy weight, averaged
        over heads. At a position they sum to the memory's share of the prediction."""
        heads = self.share_logit.shape[-1]
        return (torch.sigmoid(self.share_logit)[..., None] * self.weights).sum(2) / heads


def mix_pointer(logits: torch.Tensor, pointer: MemoryPointer) -> torch.Tensor:
    """Log-probabilities of p = (1 - g) softmax(logits) + mean over heads of share_h x pointer_h.

    logits: (B, T, V); g is the mean share. log(1 - g) comes from the log-odds, so a share
    that rounds to 1 in fp32 cannot zero the model's own distribution (a wrong recall would
    then cost infinite bits).
    """
    heads = pointer.share_logit.shape[-1]
    log_keep = F.logsigmoid(-pointer.share_logit).logsumexp(-1, keepdim=True) - math.log(heads)  # (B, T, 1)
    copy = torch.zeros_like(logits).scatter_add_(-1, pointer.tokens, pointer.pair_shares())  # (B, T, V)
    # log(copy) with -inf (and no NaN gradient) for the tokens no retrieved pair names.
    log_copy = torch.where(copy > 0, copy, torch.ones_like(copy)).log().masked_fill(copy <= 0, float("-inf"))
    return torch.logaddexp(log_keep + logits.log_softmax(-1), log_copy)
