"""Load an imported model from local files: a GGUF file or a Hugging Face directory."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from models.chat_formats import chatml, gemma
from models.import_gguf import GGUFModel
from models.import_hf import read_hf_dir
from models.transformer import TransformerLM
from models.vocab import PretrainedTokenizer, hf_vocab, vocab_digest


def is_hf_dir(path: Path) -> bool:
    """A transformers model directory (its config.json names a model_type; ours does not)."""
    config = path / "config.json"
    return config.is_file() and "model_type" in json.loads(config.read_text())


def load_pretrained(path: Path, *, name: str | None = None, device: str = "cpu",
                    dtype: torch.dtype = torch.float32) -> TransformerLM:
    """The model at `path` (a .gguf file or a transformers directory with tokenizer.json), in eval mode.
    `name` names its tokenizer in the states it makes (default: the file's stem)."""
    name = name or path.stem
    if path.suffix == ".gguf":
        gguf = GGUFModel(path)
        config, tokenizer = gguf.config(), gguf.tokenizer(name)
        weights = gguf.weights(config)
    elif is_hf_dir(path):
        config, weights = read_hf_dir(path)
        tokenizer_file = path / "tokenizer.json"
        if not tokenizer_file.is_file():
            raise ValueError(f"{path} has no tokenizer.json; this model's vocabulary cannot be read")
        spec = hf_vocab(json.loads(tokenizer_file.read_text()))
        tokenizer = PretrainedTokenizer(spec, f"{name}:{vocab_digest(spec)}",
                                        gemma if config.family == "gemma3" else chatml)
    else:
        raise ValueError(f"{path} is neither a .gguf file nor a Hugging Face model directory")
    model = TransformerLM(config, tokenizer)
    model.load_state_dict(weights)
    return model.to(device=device, dtype=dtype).eval()
