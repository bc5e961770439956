"""Convert DeepMind's recurrentgemma PyTorch `Griffin` into a HybridLM (no retrieval block).

Works on any object shaped like `recurrentgemma.torch.Griffin` (a `.config` with
Griffin's fields and a matching `state_dict()`), so the product never imports
recurrentgemma; only the parity test does.
"""

from __future__ import annotations

from typing import Any

import torch

from models.config import ModelConfig
from models.model import HybridLM


def config_from_griffin(griffin_config: Any, conv_width: int = 4) -> ModelConfig:
    block_types = tuple(getattr(b, "name", str(b)).lower() for b in griffin_config.block_types)
    return ModelConfig(
        vocab_size=griffin_config.vocab_size,
        width=griffin_config.width,
        num_heads=griffin_config.num_heads,
        mlp_expanded_width=griffin_config.mlp_expanded_width,
        lru_width=griffin_config.lru_width,
        block_types=block_types,
        attention_window=griffin_config.attention_window_size,
        conv_width=conv_width,
        logits_soft_cap=float(griffin_config.logits_soft_cap or 0.0),
        embeddings_scale_by_sqrt_dim=bool(griffin_config.embeddings_scale_by_sqrt_dim),
    )


def _mlp(src: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    w, b = src[f"{prefix}.ffw_up.w"], src[f"{prefix}.ffw_up.b"]  # (2, D, E), (2, 1, 1, E)
    return {
        "mlp.up.weight": torch.cat([w[0], w[1]], dim=1),  # (D, 2E): [gate | value]
        "mlp.up.bias": torch.cat([b[0].flatten(), b[1].flatten()]),
        "mlp.down.weight": src[f"{prefix}.ffw_down.weight"].T,
        "mlp.down.bias": src[f"{prefix}.ffw_down.bias"],
    }


def _recurrent(src: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    lru = f"{prefix}.rg_lru"
    return {
        "temporal.in_proj.weight": torch.cat([src[f"{prefix}.linear_x.weight"], src[f"{prefix}.linear_y.weight"]]).T,
        "temporal.in_proj.bias": torch.cat([src[f"{prefix}.linear_x.bias"], src[f"{prefix}.linear_y.bias"]]),
        "temporal.conv.w": src[f"{prefix}.conv_1d.w"],
        "temporal.conv.b": src[f"{prefix}.conv_1d.b"],
        "temporal.rg_lru.a_param": src[f"{lru}.a_param"],
        "temporal.rg_lru.gates.w": torch.cat([src[f"{lru}.input_gate.w"], src[f"{lru}.a_gate.w"]], dim=-1),
        "temporal.rg_lru.gates.b": torch.cat([src[f"{lru}.input_gate.b"], src[f"{lru}.a_gate.b"]], dim=-1),
        "temporal.out_proj.weight": src[f"{prefix}.linear_out.weight"].T,
        "temporal.out_proj.bias": src[f"{prefix}.linear_out.bias"],
    }


def _attention(src: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    qkv = [src[f"{prefix}.proj_{name}.weight"] for name in ("q", "k", "v")]
    return {
        "temporal.qkv.weight": torch.cat(qkv).T,
        "temporal.out.weight": src[f"{prefix}.proj_final.weight"].T,
        "temporal.out.bias": src[f"{prefix}.proj_final.bias"],
    }


def from_recurrentgemma(reference: Any) -> HybridLM:
    """A HybridLM computing the same logits as the reference Griffin model."""
    config = config_from_griffin(reference.config, conv_width=_conv_width(reference))
    src = {k: v.detach().float().cpu() for k, v in reference.state_dict().items()}
    weights = {"embedding": src["embedder.input_embedding"], "final_norm.scale": src["final_norm.scale"]}
    for i, block_type in enumerate(config.block_types):
        ref, ours = f"blocks.{i}", f"blocks.{i}"
        block = {
            "temporal_norm.scale": src[f"{ref}.temporal_pre_norm.scale"],
            "mlp_norm.scale": src[f"{ref}.channel_pre_norm.scale"],
            **_mlp(src, f"{ref}.mlp_block"),
        }
        if block_type == "recurrent":
            block.update(_recurrent(src, f"{ref}.recurrent_block"))
        else:
            block.update(_attention(src, f"{ref}.attention_block"))
        weights.update({f"{ours}.{name}": tensor for name, tensor in block.items()})
    model = HybridLM(config)
    model.load_state_dict({name: tensor.contiguous() for name, tensor in weights.items()})
    return model


def _conv_width(reference: Any) -> int:
    for module in reference.modules():
        if hasattr(module, "temporal_width"):
            return int(module.temporal_width)
    return 4
