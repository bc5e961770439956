"""Griffin's building blocks: RMSNorm, gated MLP, temporal conv, RG-LRU, recurrent block.

Numerics follow DeepMind's recurrentgemma reference (see models/convert.py):
RMSNorm scales by (1 + scale), GeLU uses the tanh approximation, and at the
first token of a stream the RG-LRU does not normalise its input.

Letters: B batch, T time, D width, L RG-LRU width, H heads (gate blocks).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from models.blocks import BlockContext, BlockOutput
from models.config import ModelConfig
from models.scan import linear_scan

# Cap on d sqrt(x)/dx, as in the reference, so bf16 training cannot produce NaN.
_MAX_SQRT_GRADIENT = 1000.0


class RMSNorm(nn.Module):
    def __init__(self, width: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.zeros(width))  # zero init: starts as plain RMS normalisation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = 1.0 + self.scale.float()
        return F.rms_norm(x.float(), (x.shape[-1],), weight=weight, eps=self.eps).type_as(x)


class Dense(nn.Module):
    """y = x W + b with W stored (in, out).

    This layout makes the single-token matrix-vector products of decoding ~3x
    faster on CPU than nn.Linear's (out, in) layout, at no cost for training.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, init_scale: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(in_features, out_features) * math.sqrt(init_scale / in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.adapter: nn.Module | None = None  # a learned low-rank change (models.adapters), added to y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        y = flat @ self.weight if self.bias is None else torch.addmm(self.bias, flat, self.weight)
        if self.adapter is not None:
            y = y + self.adapter(flat)
        return y.view(*x.shape[:-1], y.shape[-1])


def gelu(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


class GatedMLP(nn.Module):
    def __init__(self, width: int, expanded_width: int, out_init_scale: float):
        super().__init__()
        # Gate and value projections fused into one matmul: out = gelu(gate) * value.
        self.up = Dense(width, 2 * expanded_width)
        self.down = Dense(expanded_width, width, init_scale=out_init_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.up(x).chunk(2, dim=-1)  # (B, T, E) each
        return self.down(gelu(gate) * value)


class _SqrtBoundDerivative(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return torch.sqrt(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad / torch.sqrt(torch.clamp(4.0 * x, min=1.0 / _MAX_SQRT_GRADIENT**2))


class BlockDiagonalLinear(nn.Module):
    """H independent (L/H -> out_per_block) linear maps, one batched matmul."""

    def __init__(self, width: int, num_blocks: int, outputs_per_block: int):
        super().__init__()
        self.num_blocks = num_blocks
        block = width // num_blocks
        self.w = nn.Parameter(torch.randn(num_blocks, block, outputs_per_block) * math.sqrt(1.0 / block))
        self.b = nn.Parameter(torch.zeros(num_blocks, outputs_per_block))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        xb = x.reshape(-1, self.num_blocks, x.shape[-1] // self.num_blocks).transpose(0, 1)  # (H, N, L/H)
        y = torch.baddbmm(self.b[:, None, :], xb, self.w)  # (H, N, out)
        return y.transpose(0, 1).reshape(*lead, self.num_blocks, -1)  # (..., H, out)


def _rnn_param_init(width: int, min_rad: float = 0.9, max_rad: float = 0.999) -> torch.Tensor:
    """Lambda such that a = sigma(Lambda)-style decay sits uniformly on a ring of radii."""
    a = 0.5 * torch.log(torch.empty(width).uniform_(min_rad**2 + 1e-8, max_rad**2 + 1e-8))
    return torch.log(torch.exp(-a) - 1.0)  # inverse softplus of -log(a)


class RGLRU(nn.Module):
    """Real-Gated Linear Recurrent Unit.

    a_t = exp(-c * r_t * softplus(Lambda)) = sigma(-Lambda')^(c r_t), c = 8, computed in
    log space; h_t = a_t h_{t-1} + sqrt(1 - a_t^2) (i_t * x_t); h kept in fp32.
    """

    c = 8.0

    def __init__(self, width: int, num_heads: int):
        super().__init__()
        self.width = width
        self.a_param = nn.Parameter(_rnn_param_init(width))
        # Input gate and recurrence gate fused: block-diagonal, outputs [input | a] per block.
        self.gates = BlockDiagonalLinear(width, num_heads, 2 * (width // num_heads))

    def forward(self, x: torch.Tensor, h0: torch.Tensor, first_is_stream_start: bool) -> torch.Tensor:
        gate_x, gate_a = torch.sigmoid(self.gates(x).float()).chunk(2, dim=-1)  # (B, T, H, L/H) each
        log_a = gate_a.flatten(-2) * (-self.c * F.softplus(self.a_param.float()))  # (B, T, L)
        a = torch.exp(log_a)
        # a * a equals exp(2 log_a) to fp32 rounding, one transcendental cheaper.
        one_minus_a_square = 1.0 - a * a
        if torch.is_grad_enabled():
            multiplier = _SqrtBoundDerivative.apply(one_minus_a_square)
        else:  # same forward; skipping the autograd Function saves time per decoded token
            multiplier = torch.sqrt(one_minus_a_square)
        if first_is_stream_start:
            # The reference resets at position 0: no normalisation and no carried state.
            multiplier = torch.cat([torch.ones_like(multiplier[:, :1]), multiplier[:, 1:]], dim=1)
            a = torch.cat([torch.zeros_like(a[:, :1]), a[:, 1:]], dim=1)
        normalized_x = x.float() * gate_x.flatten(-2) * multiplier
        return linear_scan(a, normalized_x, h0)  # (B, T, L) fp32


class RecurrentState(NamedTuple):
    rg_lru: torch.Tensor  # (B, L) fp32 hidden state after the last token
    conv_tail: torch.Tensor  # (B, conv_width - 1, L) the last inputs of the convolution


class Conv1D(nn.Module):
    """Causal depthwise convolution over time, carrying its last inputs between chunks."""

    def __init__(self, width: int, temporal_width: int):
        super().__init__()
        self.temporal_width = temporal_width
        self.w = nn.Parameter(torch.randn(temporal_width, width) * math.sqrt(0.01 / temporal_width))
        self.b = nn.Parameter(torch.zeros(width))

    def forward(self, x: torch.Tensor, tail: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        steps = x.shape[1]
        padded = torch.cat([tail.type_as(x), x], dim=1)  # (B, K-1+T, L)
        # w[K-1] weighs the current token, w[0] the oldest one (the reference's layout).
        if steps == 1:  # decoding: one weighted sum over the K inputs
            return (padded * self.w).sum(dim=1, keepdim=True) + self.b, padded[:, 1:]
        out = self.b + padded[:, :steps] * self.w[0]
        for i in range(1, self.temporal_width):
            out = torch.addcmul(out, padded[:, i : i + steps], self.w[i])
        return out, padded[:, steps:]


class RecurrentBlock(nn.Module):
    """Griffin's temporal block: gelu(W_y x) * RG-LRU(Conv(W_x x)), projected back."""

    reads_states: tuple[type, ...] = (RecurrentState,)

    def __init__(self, config: ModelConfig, out_init_scale: float):
        super().__init__()
        width, lru_width = config.width, config.resolved_lru_width
        self.lru_width = lru_width
        self.conv_width = config.conv_width
        self.in_proj = Dense(width, 2 * lru_width)  # [x branch | gate branch]
        self.conv = Conv1D(lru_width, config.conv_width)
        self.rg_lru = RGLRU(lru_width, config.num_heads)
        self.out_proj = Dense(lru_width, width, init_scale=out_init_scale)

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> RecurrentState:
        return RecurrentState(
            rg_lru=torch.zeros(batch_size, self.lru_width, device=device),
            conv_tail=torch.zeros(batch_size, self.conv_width - 1, self.lru_width, device=device),
        )

    def forward(self, x: torch.Tensor, state: RecurrentState, context: BlockContext) -> BlockOutput:
        branch_x, branch_y = self.in_proj(x).chunk(2, dim=-1)  # (B, T, L) each
        conv_out, conv_tail = self.conv(branch_x, state.conv_tail)
        h = self.rg_lru(conv_out, state.rg_lru, first_is_stream_start=context.position == 0)  # (B, T, L) fp32
        y = (h * gelu(branch_y).float()).type_as(x)
        return BlockOutput(self.out_proj(y), RecurrentState(rg_lru=h[:, -1], conv_tail=conv_tail.detach()))
