"""Load an imported model from local files: a GGUF file (Llama, Gemma 3) or a Hugging Face directory
(Llama, Gemma 3, RecurrentGemma)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from models.chat_formats import chatml, gemma
from models.import_gguf import GGUFModel
from models.import_hf import read_hf_dir, read_recurrent_gemma_dir
from models.induction import choose_memory_layers
from models.model import HybridLM
from models.transformer import TransformerLM
from models.vocab import PretrainedTokenizer, hf_vocab


def is_hf_dir(path: Path) -> bool:
    """A transformers model directory (its config.json names a model_type; ours does not)."""
    config = path / "config.json"
    return config.is_file() and "model_type" in json.loads(config.read_text())


def load_pretrained(path: Path, *, name: str | None = None, device: str = "cpu",
                    dtype: torch.dtype = torch.float32) -> TransformerLM | HybridLM:
    """The model at `path` (a .gguf file or a transformers directory with tokenizer.json), in eval mode.
    `name` names its tokenizer in the states it makes (default: the file's stem)."""
    name = name or path.stem
    if path.suffix == ".gguf":
        model = _from_gguf(path, name)
    elif is_hf_dir(path):
        model = _from_hf_dir(path, name)
    else:
        raise ValueError(f"{path} is neither a .gguf file nor a Hugging Face model directory")
    model = model.to(device=device, dtype=dtype).eval()
    if isinstance(model, TransformerLM) and not model.config.memory_layers:
        model.use_memory_layers(choose_memory_layers(model))
    return model


def _from_gguf(path: Path, name: str) -> TransformerLM:
    gguf = GGUFModel(path)
    config = gguf.config()
    model = TransformerLM(config, gguf.tokenizer(name))
    model.load_state_dict(gguf.weights(config))
    return model


def _from_hf_dir(path: Path, name: str) -> TransformerLM | HybridLM:
    tokenizer_file = path / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise ValueError(f"{path} has no tokenizer.json; this model's vocabulary cannot be read")
    spec = hf_vocab(json.loads(tokenizer_file.read_text()))
    if json.loads((path / "config.json").read_text()).get("model_type") == "recurrent_gemma":
        # The mission's own architecture at scale: Griffin blocks, i.e. a HybridLM without retrieval.
        griffin, weights = read_recurrent_gemma_dir(path)
        model: TransformerLM | HybridLM = HybridLM(griffin)
        model.tokenizer = PretrainedTokenizer(spec, name, gemma)
    else:
        config, weights = read_hf_dir(path)
        model = TransformerLM(config, PretrainedTokenizer(spec, name, gemma if config.family == "gemma3" else chatml))
    model.load_state_dict(weights)
    return model
