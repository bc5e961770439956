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


def tiny_recurrent_gemma(seed: int = 0, vocab_size: int = 300):
    torch.manual_seed(seed)
    config = transformers.RecurrentGemmaConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=192, num_hidden_layers=5, num_attention_heads=4,
        num_key_value_heads=1, attention_window_size=8, lru_width=64, conv1d_width=4)
    model = transformers.RecurrentGemmaForCausalLM(config).eval()
    _perturb_norms(model, offset=0.0)
    return model


def write_tokenizer_json(spec, directory: Path) -> None:
    """A transformers-style tokenizer.json for a tiny VocabSpec, written by the tokenizers library."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

    vocab = {piece: i for i, piece in enumerate(spec.tokens)}
    if spec.kind == "bpe":
        tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=list(spec.merges)))
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)])
    else:
        from models.vocab import _spm_merges

        tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=_spm_merges(spec.tokens, spec.scores, spec.types),
                                         byte_fallback=True))
    tokenizer.add_special_tokens([AddedToken(piece, special=True) for piece, kind in zip(spec.tokens, spec.types)
                                  if kind == 3])
    tokenizer.save(str(directory / "tokenizer.json"))
