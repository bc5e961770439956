"""GGUF files, written here the way llama.cpp's converter writes them, load to the reference's logits."""

from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGUFWriter

from models.import_gguf import GGUFModel
from models.pretrained import load_pretrained
from tests.models.hf_reference import reference_log_probs, tiny_gemma3, tiny_llama
from tests.models.tiny_vocab import tiny_chatml_spec, tiny_spm_spec

TOLERANCE = 1e-4


def _permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's Q/K permutation for Llama-architecture files (interleaved RoPE)."""
    rows = weight.shape[0]
    return weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def write_gguf(path: Path, reference, spec, arch: str) -> Path:
    config = reference.config
    writer = GGUFWriter(str(path), arch)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(8192)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    if arch == "gemma3":
        writer.add_key_length(config.head_dim)
        writer.add_value_length(config.head_dim)
        writer.add_sliding_window(config.sliding_window)
        writer.add_rope_freq_base(config.rope_parameters["full_attention"]["rope_theta"])
        writer.add_tokenizer_model("llama")
        writer.add_token_scores(list(spec.scores))
        writer.add_add_space_prefix(False)
    else:
        writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("smollm")
        writer.add_token_merges([f"{a} {b}" for a, b in spec.merges])
    writer.add_token_list(list(spec.tokens))
    writer.add_token_types([int(t) for t in spec.types])
    names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "self_attn.q_norm": "attn_q_norm",
             "self_attn.k_norm": "attn_k_norm", "post_feedforward_layernorm": "post_ffw_norm",
             "post_attention_layernorm": "post_attention_norm" if arch == "gemma3" else "ffn_norm",
             "pre_feedforward_layernorm": "ffn_norm"}
    for name, tensor in reference.state_dict().items():
        data = tensor.float().numpy()
        if name == "lm_head.weight":
            continue
        if name.endswith("norm.weight") and arch == "gemma3":
            data = data + 1  # llama.cpp stores Gemma's norm multiplier 1 + w
        if name == "model.embed_tokens.weight":
            writer.add_tensor("token_embd.weight", data)
        elif name == "model.norm.weight":
            writer.add_tensor("output_norm.weight", data)
        else:
            _, _, index, rest = name.split(".", 3)
            part = names[rest.removesuffix(".weight")]
            if arch == "llama" and part in ("attn_q", "attn_k"):
                heads = config.num_attention_heads if part == "attn_q" else config.num_key_value_heads
                data = _permute(data, heads)
            writer.add_tensor(f"blk.{index}.{part}.weight", np.ascontiguousarray(data))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# llama.cpp scales Gemma 3's queries by head_dim ** -0.5 (the 270M's query_pre_attn_scalar is its head_dim).
CASES = {"llama": (tiny_llama, tiny_chatml_spec),
         "gemma3": (lambda **kw: tiny_gemma3(query_pre_attn_scalar=32, **kw), tiny_spm_spec)}


@pytest.mark.parametrize("arch", CASES)
def test_a_gguf_file_loads_to_the_references_logits(arch, tmp_path):
    make_reference, make_spec = CASES[arch]
    spec = make_spec()
    reference = make_reference(vocab_size=len(spec.tokens))
    path = write_gguf(tmp_path / f"tiny-{arch}.gguf", reference, spec, arch)
    model = load_pretrained(path)
    tokens = torch.randint(0, len(spec.tokens), (1, 29), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        diff = (model(tokens).log_probs - reference_log_probs(reference, tokens)).abs().max().item()
    assert diff <= TOLERANCE
    assert model.tokenizer.name.startswith(f"tiny-{arch}:")
    # The file's own vocabulary and its family's chat format came with it.
    stops = model.tokenizer.chat.stop_tokens
    assert {spec.tokens[t] for t in stops} == ({"<|im_end|>", "<|endoftext|>"} if arch == "llama"
                                              else {"<end_of_turn>", "<eos>"})


def test_a_file_of_another_architecture_is_refused_with_its_name(tmp_path):
    writer = GGUFWriter(str(tmp_path / "x.gguf"), "mamba")
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ValueError, match="'mamba' is not supported"):
        GGUFModel(tmp_path / "x.gguf")
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(ValueError, match="not a readable GGUF file"):
        GGUFModel(tmp_path / "junk.gguf")
