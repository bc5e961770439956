"""A short, honest demonstration of the streaming model on this machine's own text.

Streams a Python standard-library source file through the model chunk by chunk,
carrying the recurrent state and filling a retrieval memory, scores each chunk
before it is added to memory (bits per byte), round-trips the session state
through bytes as the service will, and samples a continuation.
"""

from __future__ import annotations

import math
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from models import ByteTokenizer, HybridLM, ModelConfig, SamplingConfig, State, TensorMemory, generate
from settings import SHIPPED_CHECKPOINT

DEFAULT_FILE = Path(sysconfig.get_paths()["stdlib"]) / "textwrap.py"
# The shipped base model; absent in a checkout without it, in which case a fresh model is used.


@dataclass(frozen=True)
class DemoReport:
    source: str
    bytes_read: int
    bits_per_byte: float
    bytes_per_s: float
    memory_pairs: int
    state_bytes: int
    sample: str


def load_or_build(checkpoint: Path | None, preset: str) -> HybridLM:
    """The given checkpoint; else the shipped one for the small preset; else fresh `preset` weights."""
    if checkpoint is None and preset == "small" and (SHIPPED_CHECKPOINT / "config.json").exists():
        checkpoint = SHIPPED_CHECKPOINT
    return HybridLM.load(checkpoint) if checkpoint else HybridLM(ModelConfig.preset(preset))


@torch.inference_mode()
def run_demo(
    *, checkpoint: Path | None, preset: str, source: Path, max_bytes: int, chunk: int, seed: int
) -> DemoReport:
    torch.manual_seed(seed)
    model = load_or_build(checkpoint, preset).eval()
    data = source.read_bytes()[:max_bytes]
    if len(data) < 2:
        raise ValueError(f"{source} holds fewer than 2 bytes; give a longer text file")
    tokens = ByteTokenizer().tensor(data)
    memory = TensorMemory(model.config.head_dim, one_stream=True)
    state, nats, started = model.init_state(1), 0.0, time.perf_counter()
    for start in range(0, tokens.shape[1] - 1, chunk):
        inputs = tokens[:, start : start + chunk]
        targets = tokens[:, start + 1 : start + chunk + 1]
        out = model(inputs, state, memory)
        steps = targets.shape[1]
        nats += model.loss(out.log_probs[:, :steps], targets).item() * steps
        if out.memory_kv is not None:
            memory.add(*out.memory_kv)
        state = State.from_bytes(out.state.to_bytes())  # what a restart between turns does
    elapsed = time.perf_counter() - started
    scored = tokens.shape[1] - 1
    reply = generate(
        model, tokens[:, -1:], state=state, memory=memory, sampling=SamplingConfig(seed=seed, max_bytes=120)
    )
    return DemoReport(
        source=str(source),
        bytes_read=len(data),
        bits_per_byte=nats / scored / math.log(2),
        bytes_per_s=len(data) / elapsed,
        memory_pairs=len(memory),
        state_bytes=len(state.to_bytes()),
        sample="".join(reply),
    )
