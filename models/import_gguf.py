"""Import a GGUF file (llama.cpp's format) as a TransformerLM, its vocabulary and chat format included.

Read and dequantised with the maintained `gguf` package; nothing of llama.cpp runs. Two of
llama.cpp's conversions are undone on the way in: Llama-architecture files store the Q and K
projections permuted for its interleaved RoPE (this model rotates halves, as transformers does),
and Gemma files already store norm weights as 1 + w (this model's multiplier form).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from gguf import GGUFReader, GGUFValueType
from gguf.quants import dequantize

from models.chat_formats import chatml, gemma
from models.transformer_config import TransformerConfig
from models.vocab import PretrainedTokenizer, VocabSpec

ARCHITECTURES = ("llama", "gemma3")
# Gemma 3's sliding layers: five of every six; its local RoPE base is fixed by the architecture.
GEMMA3_PATTERN, GEMMA3_LOCAL_ROPE_BASE = 6, 10_000.0

_PROJECTIONS = {"attn_q": "attention.q", "attn_k": "attention.k", "attn_v": "attention.v",
                "attn_output": "attention.out", "ffn_gate": "mlp.gate", "ffn_up": "mlp.up", "ffn_down": "mlp.down"}
_NORMS = {"attn_norm": "attention_norm", "ffn_norm": "mlp_norm", "post_attention_norm": "post_attention_norm",
          "post_ffw_norm": "post_mlp_norm", "attn_q_norm": "attention.q_norm", "attn_k_norm": "attention.k_norm"}


class GGUFModel:
    """One GGUF file's metadata, read lazily: tensors are dequantised only by `weights()`."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.reader = GGUFReader(path)
        except (ValueError, OSError) as exc:
            raise ValueError(f"{path} is not a readable GGUF file: {exc}") from exc
        self.architecture = str(self.field("general.architecture"))
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"GGUF architecture {self.architecture!r} is not supported; "
                             f"supported: {', '.join(ARCHITECTURES)}")

    def field(self, key: str, default: Any = None) -> Any:
        field = self.reader.fields.get(key)
        if field is None:
            if default is None:
                raise ValueError(f"{self.path.name}: GGUF metadata lacks {key}")
            return default
        if field.types and field.types[0] == GGUFValueType.ARRAY:
            return field.contents()
        return field.contents()

    def arch(self, key: str, default: Any = None) -> Any:
        return self.field(f"{self.architecture}.{key}", default)

    def config(self) -> TransformerConfig:
        width, heads, layers = int(self.arch("embedding_length")), int(self.arch("attention.head_count")), \
            int(self.arch("block_count"))
        head_dim = int(self.arch("attention.key_length", width // heads))
        vocab = len(self.reader.fields["tokenizer.ggml.tokens"].data)
        if self.reader.fields.get(f"{self.architecture}.rope.scaling.type"):
            raise ValueError(f"{self.path.name}: RoPE scaling is not supported")
        common = {"vocab_size": vocab, "width": width, "num_heads": heads, "head_dim": head_dim,
                      "num_kv_heads": int(self.arch("attention.head_count_kv", heads)),
                      "mlp_width": int(self.arch("feed_forward_length")),
                      "norm_eps": float(self.arch("attention.layer_norm_rms_epsilon")),
                      "rope_base": float(self.arch("rope.freq_base", 10_000.0))}
        if self.architecture == "llama":
            return TransformerConfig(family="llama", sliding_layers=(False,) * layers, **common)
        return TransformerConfig(
            family="gemma3", sliding_layers=tuple(bool((i + 1) % GEMMA3_PATTERN) for i in range(layers)),
            local_rope_base=GEMMA3_LOCAL_ROPE_BASE, sliding_window=int(self.arch("attention.sliding_window")),
            qk_norm=True, sandwich_norms=True, activation="gelu_tanh", scale_embeddings=True,
            query_scale=self.arch("attention.scale", head_dim**-0.5), **common)

    def weights(self, config: TransformerConfig) -> dict[str, torch.Tensor]:
        """Every tensor dequantised to fp32, under our names and (in, out) layouts."""
        out: dict[str, torch.Tensor] = {}
        for tensor in self.reader.tensors:
            data = torch.from_numpy(np.array(dequantize(tensor.data, tensor.tensor_type), dtype=np.float32))
            name = tensor.name.removesuffix(".weight")
            if name == "token_embd":
                out["embedding"] = data
            elif name == "output_norm":
                out["final_norm.weight"] = data
            elif name == "output":
                out["output"] = data
            elif name.startswith("blk."):
                _, index, part = name.split(".", 2)
                prefix = f"layers.{index}."
                if part in _PROJECTIONS:
                    if config.family == "llama" and part in ("attn_q", "attn_k"):
                        data = _unpermute(data, config.num_heads if part == "attn_q" else config.num_kv_heads)
                    out[prefix + _PROJECTIONS[part] + ".weight"] = data.T.contiguous()
                elif part in _NORMS:
                    out[prefix + _NORMS[part] + ".weight"] = data
                else:
                    raise ValueError(f"{self.path.name}: unexpected tensor {tensor.name}")
            elif name != "rope_freqs":
                raise ValueError(f"{self.path.name}: unexpected tensor {tensor.name}")
        head = out.pop("output", None)
        if head is not None and not torch.equal(head, out["embedding"]):
            raise ValueError(f"{self.path.name}: an output layer untied from the embedding is not supported")
        return out

    def vocab(self) -> VocabSpec:
        kind = str(self.field("tokenizer.ggml.model"))
        tokens = list(self.field("tokenizer.ggml.tokens"))
        types = [int(t) for t in self.field("tokenizer.ggml.token_type")]
        if kind == "gpt2":
            merges = [tuple(m.split(" ", 1)) for m in self.field("tokenizer.ggml.merges")]
            pre = str(self.field("tokenizer.ggml.pre", "default"))
            return VocabSpec("bpe", tokens, types, merges=merges, split_digits=pre in ("smollm", "llama-bpe"))
        if kind == "llama":
            if self.field("tokenizer.ggml.add_space_prefix", True) is not False:
                raise ValueError(f"{self.path.name}: SentencePiece vocabularies with a space prefix are not supported")
            return VocabSpec("spm", tokens, types, scores=[float(s) for s in self.field("tokenizer.ggml.scores")])
        raise ValueError(f"{self.path.name}: tokenizer model {kind!r} is not supported (gpt2 or llama)")

    def tokenizer(self, name: str) -> PretrainedTokenizer:
        spec = self.vocab()
        chat = gemma if self.architecture == "gemma3" else chatml
        return PretrainedTokenizer(spec, name, chat)


def _unpermute(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """Undo llama.cpp's Q/K row permutation: per head, its (E/2, 2) interleave back to (2, E/2)."""
    rows, cols = weight.shape
    return weight.reshape(heads, rows // heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)
