"""Linear recurrence h_t = a_t * h_{t-1} + x_t, vectorised over time.

A Hillis-Steele scan: log2(T) rounds of whole-tensor multiply-adds instead of
a Python loop over T steps. It multiplies only numbers in [0, 1], so unlike a
cumulative-product-in-log-space formulation it cannot overflow on long chunks.
The backward pass is the same scan run in reverse, so autograd stores nothing
per round.

Letters: B batch, T time, L features (the RG-LRU width).
"""

from __future__ import annotations

import torch


def _scan_forward(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Inclusive scan along dim 1 with h_{-1} = 0. Runs outside autograd, so it updates in place."""
    h, a_acc = x.clone(), a.clone()
    step = 1
    length = x.shape[1]
    while step < length:
        # After this round h[t] sums contributions from x[t-2*step+1 .. t]. The products are
        # taken before the in-place update because source and target ranges overlap.
        h[:, step:] += a_acc[:, step:] * h[:, :-step]
        if step * 2 < length:
            a_acc[:, step:] *= a_acc[:, :-step].clone()
        step *= 2
    return h


class _LinearScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: torch.Tensor, x: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        x0 = torch.cat([(x[:, 0] + a[:, 0] * h0)[:, None], x[:, 1:]], dim=1)
        h = _scan_forward(a, x0)  # (B, T, L)
        ctx.save_for_backward(a, h, h0)
        return h

    @staticmethod
    def backward(ctx, grad_h: torch.Tensor):  # type: ignore[override]
        a, h, h0 = ctx.saved_tensors
        # dL/dh_t = g_t + a_{t+1} dL/dh_{t+1}: the same recurrence, reversed in time.
        a_next = torch.cat([a[:, 1:], torch.zeros_like(a[:, :1])], dim=1)
        grad_total = _scan_forward(a_next.flip(1), grad_h.flip(1)).flip(1)
        h_prev = torch.cat([h0[:, None], h[:, :-1]], dim=1)
        grad_a = grad_total * h_prev
        grad_h0 = grad_total[:, 0] * a[:, 0]
        return grad_a, grad_total, grad_h0


def linear_scan(a: torch.Tensor, x: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """All hidden states h_1..h_T of h_t = a_t * h_{t-1} + x_t, starting from h0.

    a, x: (B, T, L); h0: (B, L). Returns (B, T, L) in the dtype of x.
    """
    if x.shape[1] == 1:
        # Decoding: the O(1) step needs no scan machinery.
        return (a[:, 0] * h0 + x[:, 0])[:, None]
    return _LinearScan.apply(a, x, h0)
