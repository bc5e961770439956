"""Import a Hugging Face model directory (config.json, *.safetensors): config and weights under this
project's names.

Reads local files only. Supported `model_type`s: "llama" (SmolLM2 and other Llama-architecture
models) and "gemma3_text" (Gemma 3 text models) as a TransformerLM; "recurrent_gemma" as a
HybridLM (Griffin's blocks). Tensors are renamed and transposed to this project's (in, out)
layout; Gemma 3's norm weights w become the multiplier 1 + w.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from models.config import ModelConfig
from models.transformer_config import TransformerConfig

SUPPORTED_TYPES = ("llama", "gemma3_text", "gemma3")


def _rope_theta(config: dict[str, Any], layer_type: str, default: float) -> float:
    """RoPE base of a layer type, from either config layout (transformers 4's keys or 5's rope_parameters)."""
    params = config.get("rope_parameters") or {}
    if layer_type in params:
        params = params[layer_type]
    if params.get("rope_type", "default") != "default" or config.get("rope_scaling"):
        raise ValueError(f"RoPE scaling {params.get('rope_type') or config.get('rope_scaling')} is not supported")
    if "rope_theta" in params:
        return float(params["rope_theta"])
    if layer_type == "sliding_attention":
        return float(config.get("rope_local_base_freq", default))
    return float(config.get("rope_theta", default))


def hf_config(config: dict[str, Any]) -> TransformerConfig:
    """Our config from a transformers config.json (dict); ValueError for an architecture we lack."""
    model_type = config.get("model_type")
    if model_type == "gemma3":  # a multimodal checkpoint: its language model's config
        config = config["text_config"]
        model_type = "gemma3_text"
    if model_type not in SUPPORTED_TYPES:
        raise ValueError(f"model type {model_type!r} is not supported; supported: "
                         f"{', '.join(SUPPORTED_TYPES)}, recurrent_gemma")
    heads = config["num_attention_heads"]
    common = {
        "vocab_size": config["vocab_size"], "width": config["hidden_size"], "num_heads": heads,
        "num_kv_heads": config.get("num_key_value_heads") or heads,
        "head_dim": config.get("head_dim") or config["hidden_size"] // heads,
        "mlp_width": config["intermediate_size"], "norm_eps": config["rms_norm_eps"],
    }
    layers = config["num_hidden_layers"]
    if model_type == "llama":
        if config.get("attention_bias") or config.get("mlp_bias"):
            raise ValueError("Llama checkpoints with biases are not supported")
        return TransformerConfig(family="llama", sliding_layers=(False,) * layers, activation="silu",
                                 rope_base=_rope_theta(config, "full_attention", 10_000.0), **common)
    types = config.get("layer_types") or [
        "sliding_attention" if (i + 1) % config.get("sliding_window_pattern", 6) else "full_attention"
        for i in range(layers)]
    if config.get("attn_logit_softcapping"):
        raise ValueError("attention logit soft-capping is not supported")
    return TransformerConfig(
        family="gemma3", sliding_layers=tuple(t == "sliding_attention" for t in types),
        rope_base=_rope_theta(config, "full_attention", 1_000_000.0),
        local_rope_base=_rope_theta(config, "sliding_attention", 10_000.0),
        sliding_window=config["sliding_window"], qk_norm=True, sandwich_norms=True, activation="gelu_tanh",
        scale_embeddings=True, query_scale=config.get("query_pre_attn_scalar", common["head_dim"]) ** -0.5,
        final_soft_cap=config.get("final_logit_softcapping") or 0.0, **common)


# Our parameter suffix per transformers suffix, by family. Llama's "post_attention_layernorm" is its
# pre-MLP norm; Gemma's is the norm after attention.
_LAYER_NAMES = {
    "llama": {"input_layernorm": "attention_norm", "post_attention_layernorm": "mlp_norm"},
    "gemma3": {"input_layernorm": "attention_norm", "post_attention_layernorm": "post_attention_norm",
               "pre_feedforward_layernorm": "mlp_norm", "post_feedforward_layernorm": "post_mlp_norm"},
}
_PROJECTIONS = {"self_attn.q_proj": "attention.q", "self_attn.k_proj": "attention.k", "self_attn.v_proj": "attention.v",
                "self_attn.o_proj": "attention.out", "mlp.gate_proj": "mlp.gate", "mlp.up_proj": "mlp.up",
                "mlp.down_proj": "mlp.down"}


def hf_weights(config: TransformerConfig, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers' tensors under our names and layouts."""
    gemma = config.family == "gemma3"
    out: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        name = name.removeprefix("model.language_model.").removeprefix("model.")
        tensor = tensor.float()
        if name == "embed_tokens.weight":
            out["embedding"] = tensor
        elif name == "norm.weight":
            out["final_norm.weight"] = tensor + 1 if gemma else tensor
        elif name == "lm_head.weight":
            out["lm_head"] = tensor  # checked against the embedding below
        elif name.startswith("layers."):
            _, index, rest = name.split(".", 2)
            rest = rest.removesuffix(".weight")
            prefix = f"layers.{index}."
            if rest in _PROJECTIONS:
                out[prefix + _PROJECTIONS[rest] + ".weight"] = tensor.T.contiguous()
            elif rest in ("self_attn.q_norm", "self_attn.k_norm"):
                out[prefix + "attention." + rest.split(".")[1] + ".weight"] = tensor + 1
            elif rest in _LAYER_NAMES[config.family]:
                out[prefix + _LAYER_NAMES[config.family][rest] + ".weight"] = tensor + 1 if gemma else tensor
            else:
                raise ValueError(f"unexpected tensor {name!r} in a {config.family} checkpoint")
    head = out.pop("lm_head", None)
    if head is not None and not torch.equal(head, out["embedding"]):
        raise ValueError("checkpoints with an output layer untied from the embedding are not supported")
    return out


def read_dir(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """A transformers model directory's config.json and its safetensors' tensors, as stored."""
    config_file = path / "config.json"
    files = sorted(path.glob("*.safetensors"))
    if not config_file.is_file() or not files:
        raise ValueError(f"{path} is not a Hugging Face model directory (needs config.json and *.safetensors)")
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        tensors.update(load_file(file))
    return json.loads(config_file.read_text()), tensors


def read_hf_dir(path: Path) -> tuple[TransformerConfig, dict[str, torch.Tensor]]:
    """Config and weights (our names, fp32) of a Llama or Gemma 3 directory."""
    raw, tensors = read_dir(path)
    config = hf_config(raw)
    if raw.get("tie_word_embeddings", True) is False and "lm_head.weight" not in tensors:
        raise ValueError("untied checkpoint without lm_head.weight")
    return config, hf_weights(config, tensors)


def recurrent_gemma_config(config: dict[str, Any]) -> ModelConfig:
    """The HybridLM config of a transformers RecurrentGemma checkpoint (Griffin: the same blocks)."""
    heads = config["num_attention_heads"]
    if (config.get("num_key_value_heads") or heads) != 1:
        raise ValueError("RecurrentGemma checkpoints with more than one key/value head are not supported")
    params = config.get("rope_parameters") or {}
    if params.get("partial_rotary_factor", config.get("partial_rotary_factor", 0.5)) != 0.5:
        raise ValueError("RecurrentGemma checkpoints must rotate half of each head's features")
    layers, pattern = config["num_hidden_layers"], list(config.get("block_types") or ("recurrent", "recurrent",
                                                                                      "attention"))
    return ModelConfig(
        vocab_size=config["vocab_size"], width=config["hidden_size"], num_heads=heads,
        mlp_expanded_width=config["intermediate_size"] // 2, lru_width=config.get("lru_width"),
        block_types=tuple(pattern[i % len(pattern)] for i in range(layers)),
        # transformers' window counts the query itself; this model's counts the tokens before it.
        attention_window=config.get("attention_window_size", 2048) - 1, conv_width=config.get("conv1d_width", 4),
        logits_soft_cap=float(config.get("logits_soft_cap") or 0.0), embeddings_scale_by_sqrt_dim=True,
        rope_max_wavelength=int(params.get("rope_theta", config.get("rope_theta", 10_000))),
    )


def recurrent_gemma_weights(config: ModelConfig, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers' RecurrentGemma tensors under HybridLM's names and layouts."""
    src = {name.removeprefix("model."): t.float() for name, t in tensors.items()}
    out = {"embedding": src["embed_tokens.weight"], "final_norm.scale": src["final_norm.weight"]}
    for i, block_type in enumerate(config.block_types):
        hf, ours = f"layers.{i}.", f"blocks.{i}."
        mlp = hf + "mlp_block."
        out.update({
            ours + "temporal_norm.scale": src[hf + "temporal_pre_norm.weight"],
            ours + "mlp_norm.scale": src[hf + "channel_pre_norm.weight"],
            ours + "mlp.up.weight": torch.cat([src[mlp + "gate_proj.weight"], src[mlp + "up_proj.weight"]]).T,
            ours + "mlp.up.bias": torch.cat([src[mlp + "gate_proj.bias"], src[mlp + "up_proj.bias"]]),
            ours + "mlp.down.weight": src[mlp + "down_proj.weight"].T,
            ours + "mlp.down.bias": src[mlp + "down_proj.bias"],
        })
        block = hf + "temporal_block."
        if block_type == "recurrent":
            lru = block + "rg_lru."
            out.update({
                ours + "temporal.in_proj.weight": torch.cat([src[block + "linear_x.weight"],
                                                             src[block + "linear_y.weight"]]).T,
                ours + "temporal.in_proj.bias": torch.cat([src[block + "linear_x.bias"], src[block + "linear_y.bias"]]),
                # transformers' depthwise Conv1d weight is (L, 1, W), its last tap on the current token.
                ours + "temporal.conv.w": src[block + "conv_1d.weight"][:, 0, :].T,
                ours + "temporal.conv.b": src[block + "conv_1d.bias"],
                ours + "temporal.rg_lru.a_param": src[lru + "recurrent_param"],
                ours + "temporal.rg_lru.gates.w": torch.cat([src[lru + "input_gate_weight"],
                                                             src[lru + "recurrent_gate_weight"]], dim=-1),
                ours + "temporal.rg_lru.gates.b": torch.cat([src[lru + "input_gate_bias"],
                                                             src[lru + "recurrent_gate_bias"]], dim=-1),
                ours + "temporal.out_proj.weight": src[block + "linear_out.weight"].T,
                ours + "temporal.out_proj.bias": src[block + "linear_out.bias"],
            })
        else:
            qkv = [src[block + f"{name}_proj.weight"] for name in ("q", "k", "v")]
            out.update({
                ours + "temporal.qkv.weight": torch.cat(qkv).T,
                ours + "temporal.out.weight": src[block + "o_proj.weight"].T,
                ours + "temporal.out.bias": src[block + "o_proj.bias"],
            })
    return {name: tensor.contiguous() for name, tensor in out.items()}


def read_recurrent_gemma_dir(path: Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Config and weights (HybridLM's names, fp32) of a RecurrentGemma directory."""
    raw, tensors = read_dir(path)
    config = recurrent_gemma_config(raw)
    return config, recurrent_gemma_weights(config, tensors)
