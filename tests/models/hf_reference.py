"""Tiny random transformers models, the reference the imported architectures must match."""

from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="transformers (a test dependency) is not installed")


def tiny_llama(seed: int = 0, vocab_size: int = 300):
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, rope_theta=100_000.0, rms_norm_eps=1e-5, tie_word_embeddings=True)
    model = transformers.LlamaForCausalLM(config).eval()
    _perturb_norms(model, offset=1.0)
    return model


def tiny_gemma3(seed: int = 0, sliding_window: int = 8, vocab_size: int = 300, query_pre_attn_scalar: int = 24):
    torch.manual_seed(seed)
    config = transformers.Gemma3TextConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=96, num_hidden_layers=7, num_attention_heads=4,
        num_key_value_heads=1, head_dim=32, sliding_window=sliding_window, query_pre_attn_scalar=query_pre_attn_scalar,
        tie_word_embeddings=True)
    model = transformers.Gemma3ForCausalLM(config).eval()
    _perturb_norms(model, offset=0.0)  # Gemma's norms multiply by 1 + w
    return model


def _perturb_norms(model, offset: float) -> None:
    """Random norm weights: initialised ones (or zeros) would hide a convention mistake."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.copy_(offset + 0.5 * torch.randn_like(param))


def save(model, directory: Path) -> Path:
    model.save_pretrained(directory)
    return directory


@torch.no_grad()
def reference_log_probs(model, tokens: torch.Tensor) -> torch.Tensor:
    return model(tokens).logits.float().log_softmax(-1)
