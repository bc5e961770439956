"""An agent's base model and learning configuration, from what its SQL row says."""

from __future__ import annotations

import copy
import dataclasses
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from learner.online import LearningConfig
from models import HybridLM, LanguageModel, ModelConfig
from models.catalog import CATALOG, DEFAULT_MODEL, CatalogModel
from models.model import CONFIG_FILE
from models.pretrained import is_hf_dir, load_pretrained
from settings import SHIPPED_CHECKPOINT

PRESET_PREFIX = "preset:"
# Seed of preset bases: every process must build bit-identical weights from "preset:NAME".
PRESET_SEED = 0


# The project's own byte-level model, shipped in the repository.
SMALL = "small"


def parse_base(spec: str) -> ModelConfig | Path | CatalogModel:
    """What a base spec names: a preset's config ("preset:NAME"; ValueError for an unknown one), an
    installed pretrained model by name (models.catalog), "small", or a path (a saved model directory,
    a .gguf file or a Hugging Face model directory)."""
    if spec.startswith(PRESET_PREFIX):
        return ModelConfig.preset(spec.removeprefix(PRESET_PREFIX))
    if spec in CATALOG:
        return CATALOG[spec]
    return SHIPPED_CHECKPOINT if spec == SMALL else Path(spec)


def check_base(spec: str) -> None:
    """ValueError, saying what to give instead, unless `spec` names a base every process can load
    (checked without loading weights)."""
    base = parse_base(spec)
    if isinstance(base, CatalogModel):
        base.path()  # raises with the install command
    elif isinstance(base, Path) and not _is_model_path(base):
        names = ", ".join([SMALL, *CATALOG])
        raise ValueError(f"{spec} is not a model: give one of {names}, a saved model directory, a .gguf file, "
                         "a Hugging Face model directory or 'preset:NAME'")


def _is_model_path(path: Path) -> bool:
    try:
        return (path / CONFIG_FILE).is_file() or (path.suffix == ".gguf" and path.is_file())
    except OSError:  # a name too long for the file system, a path it cannot read: not a model either
        return False


def default_base() -> str:
    """New agents' base: the default pretrained model when it is installed, else the shipped small model."""
    return DEFAULT_MODEL if CATALOG[DEFAULT_MODEL].installed() else SMALL


def base_models() -> list[dict[str, Any]]:
    """Every base a name can pick (`small` and the catalog), whether it is installed, its size,
    licence, vocabulary and install command, and which one new agents get."""
    shipped = sum(f.stat().st_size for f in SHIPPED_CHECKPOINT.glob("*") if f.is_file())
    rows = [{"name": SMALL, "installed": True, "size_bytes": shipped, "licence": "Apache-2.0 (this project)",
             "tokenizer": "bytes, 262 tokens", "chat": False, "install": "shipped in the repository",
             "description": "the project's own 4.9M-parameter byte-level model; tests and offline fallback"}]
    rows += [{"name": model.name, "installed": model.installed(), "size_bytes": model.size_bytes(),
              "licence": model.licence, "tokenizer": model.tokenizer, "chat": model.chat, "install": model.install,
              "description": model.description} for model in CATALOG.values()]
    default = default_base()
    return [{**row, "default": row["name"] == default} for row in rows]


@lru_cache(maxsize=4)
def _cached_base(spec: str, device: str) -> LanguageModel:
    base = parse_base(spec)
    if isinstance(base, CatalogModel):
        return load_pretrained(base.path(), name=base.name, device=device)
    if isinstance(base, Path):
        if base.suffix == ".gguf" or is_hf_dir(base):
            return load_pretrained(base.resolve(), device=device)
        return HybridLM.load(base, device=device).eval()
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(PRESET_SEED)
    try:
        model = HybridLM(base)
    finally:
        torch.random.set_rng_state(generator_state)
    return model.to(device).eval()


def load_base(spec: str, device: str = "cpu") -> LanguageModel:
    """A fresh copy of the base model `spec` names (parse_base), "preset:NAME" being seeded random
    weights for tests. Loaded once per process; callers own the copy."""
    return copy.deepcopy(_cached_base(spec, device))


def base_config(spec: str, device: str = "cpu") -> Any:
    """The config of the base `spec` names, without copying the model (loaded once per process)."""
    return _cached_base(spec, device).config


# What an imported model learns when its agent names nothing: low-rank adapters above the memory layers
# (models.adapters), at IMPORTED_ADAPTER_RATE. On what the model says they beat the norm scales: the life's
# next turns 12% more likely against 1.4%, as many plain questions answered, a document's facts closer rather
# than further (BENCHMARKS.md, "What learns, judged on what the model says").
IMPORTED_TRAINABLE = "adapters"
IMPORTED_ADAPTER_RATE = 1e-4
# An imported model's step size for its norm scales (trainable="downstream"): on SmolLM2 3e-4 scored better
# than 1e-3 with far less forgetting (BENCHMARKS.md, "Recall through chat": 0.5313 vs 0.5315 bits per byte,
# forgetting 1.001 vs 1.016 at worst).
IMPORTED_LEARNING_RATE = 3e-4
# An imported model's gate when its agent names none (learner.gate): its conversations are what learning can
# break (BENCHMARKS.md, "A gate on what learning serves").
IMPORTED_GATE_EVERY = 8


def is_imported(spec: str) -> bool:
    """Whether the base `spec` names is an imported (pretrained) model, without loading it."""
    base = parse_base(spec)
    return isinstance(base, CatalogModel) or (isinstance(base, Path) and (base.suffix == ".gguf" or is_hf_dir(base)))


def learning_config(settings: dict[str, Any] | None, *, imported: bool = False) -> LearningConfig:
    """An agent's `learning_settings` as a LearningConfig (`imported`: for an imported model, whose defaults
    are IMPORTED_TRAINABLE, its step size and IMPORTED_GATE_EVERY); unknown keys are an error, not ignored."""
    settings = settings or {}
    if imported:
        trainable = settings.get("trainable", IMPORTED_TRAINABLE)
        rate = IMPORTED_ADAPTER_RATE if trainable == "adapters" else IMPORTED_LEARNING_RATE
        settings = {"trainable": trainable, "learning_rate": rate, "gate_every": IMPORTED_GATE_EVERY, **settings}
    known = {field.name for field in dataclasses.fields(LearningConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(f"unknown learning settings {unknown}; use {sorted(known)}")
    config = LearningConfig(**settings)
    if config.trainable == "all":
        # "all" changes the layers that compute stored keys; until the maintenance workers re-encode
        # stored memories, an agent learning that way would retrieve with stale keys.
        raise ValueError("agents learn with trainable='downstream' or 'adapters' (re-encoding stored memories "
                         "for 'all' is not available in the workers yet; `lifelong eval` measures 'all')")
    if config.trainable == "adapters" and not imported:
        raise ValueError("trainable='adapters' is for imported bases; this agent's base learns 'downstream'")
    return config
