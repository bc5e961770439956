"""Base-model training with memory in the loop, resumable and deterministic for a seed.

B parallel streams each read the corpus's training documents (in a seeded order)
as one endless byte stream, a document marker before each document. The model
reads each stream in chunks of T tokens with its recurrent state carried across
chunks, and its retrieval block searches that stream's own earlier pairs (a
bounded per-stream memory), as in Memorizing Transformers. Gradients are
truncated at chunk boundaries.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from learner.corpus import read_documents
from learner.synthetic import recall_positions
from models import HybridLM, ModelConfig, Special, State
from models.cpu import bf16_products_are_fast
from models.memory import RowMemory


@dataclass(frozen=True)
class TrainConfig:
    preset: str = "small"
    batch_size: int = 8  # parallel streams
    chunk_tokens: int = 512  # tokens per step per stream (gradients are truncated here)
    steps: int = 20_000
    learning_rate: float = 2e-3
    warmup_steps: int = 200
    min_lr_ratio: float = 0.1  # cosine decay ends at this fraction of the peak
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    memory_tokens: int = 16_384  # per-stream retrieval memory, newest pairs kept
    bf16: bool = True  # autocast where the device supports it (measured equal loss on CPU, see BENCHMARKS.md)
    seed: int = 0
    checkpoint_every: int = 200
    # Parameter-name prefixes that learn (e.g. "blocks.5." for the retrieval block); empty: all.
    # Frozen lower blocks also skip their backward pass, which makes fine-tuning the top cheap.
    train_only: tuple[str, ...] = ()
    # Loss weight of the bytes a synthetic task's recall must produce (1: the plain mean). The plain
    # mean lets the many positions where memory's near matches cost bits outvote the few where a
    # recall decides the byte, and quiets the memory (see BENCHMARKS.md).
    recall_weight: float = 1.0

    def __post_init__(self) -> None:
        if not self.recall_weight > 0:
            raise ValueError(f"recall_weight must be positive, got {self.recall_weight}")


class StreamReader:
    """An endless stream of one split's documents, in an order fixed by a seed; its cursor is resumable."""

    def __init__(self, documents: list[bytes], seed: int):
        self.documents = documents
        self.order = list(range(len(documents)))
        random.Random(seed).shuffle(self.order)
        self.position = 0  # index into order
        self.offset = 0  # bytes of the current document already read
        self.marked = False  # whether the current document's marker has been emitted
        self.recalls = bytearray()  # of the last `take`, 1 where the byte is a recall (recall_positions)
        self._marks: tuple[int, bytearray] = (-1, bytearray())  # (document index, its recall positions)

    def take(self, count: int) -> list[int]:
        out: list[int] = []
        self.recalls = bytearray()
        while len(out) < count:
            index = self.order[self.position % len(self.order)]
            document = self.documents[index]
            if self._marks[0] != index:
                self._marks = (index, recall_positions(document))
            if not self.marked:
                out.append(int(Special.DOCUMENT))
                self.recalls.append(0)
                self.marked = True
                continue
            step = min(count - len(out), len(document) - self.offset)
            out += document[self.offset : self.offset + step]
            self.recalls += self._marks[1][self.offset : self.offset + step]
            self.offset += step
            if self.offset >= len(document):
                self.position, self.offset, self.marked = self.position + 1, 0, False
        return out

    def cursor(self) -> dict:
        return {"position": self.position, "offset": self.offset, "marked": self.marked}

    def restore(self, cursor: dict) -> None:
        self.position, self.offset, self.marked = cursor["position"], cursor["offset"], cursor["marked"]


def learning_rate(config: TrainConfig, step: int) -> float:
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = min(1.0, (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps))
    return config.learning_rate * (
        config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    )


class Trainer:
    def __init__(
        self, config: TrainConfig, corpus: Path, out: Path, device: str = "cpu", model_config: ModelConfig | None = None
    ):
        self.config, self.out, self.device = config, Path(out), torch.device(device)
        torch.manual_seed(config.seed)
        self.model = HybridLM(model_config or ModelConfig.preset(config.preset)).to(self.device)
        self.optimizer = torch.optim.AdamW(
            self._trainable_parameters(), lr=config.learning_rate, weight_decay=config.weight_decay, betas=(0.9, 0.95)
        )
        documents = [d.data for d in read_documents(corpus, "train")]
        if not documents:
            raise ValueError(f"{corpus} has no training documents; run `lifelong corpus build` first")
        self.streams = [StreamReader(documents, seed=config.seed * 1000 + row) for row in range(config.batch_size)]
        self.state = self.model.init_state(config.batch_size)
        self.memory = RowMemory(config.batch_size, self.model.config.head_dim, config.memory_tokens, self.device)
        # Last token of each stream's previous chunk: the first input of its next chunk.
        self._last = torch.full((config.batch_size, 1), int(Special.BEGIN), device=self.device)
        self.step = 0
        self.history: list[dict] = []  # one entry per logged step: step, loss (nats), lr
        self.elapsed_seconds = 0.0  # training wall time, summed over resumed runs
        self.initialized_from: str | None = None  # the saved model a fine-tuning run started from

    def _trainable_parameters(self) -> list[torch.nn.Parameter]:
        prefixes = self.config.train_only
        chosen = []
        for name, parameter in self.model.named_parameters():
            parameter.requires_grad_(not prefixes or name.startswith(prefixes))
            if parameter.requires_grad:
                chosen.append(parameter)
        if not chosen:
            raise ValueError(f"no parameter name starts with any of {list(prefixes)}")
        return chosen

    def next_batch(self) -> torch.Tensor:
        """(B, T + 1) tokens: the inputs and, shifted by one, their targets; streams overlap by one token."""
        batch = torch.tensor([stream.take(self.config.chunk_tokens) for stream in self.streams], device=self.device)
        full = torch.cat([self._last, batch], dim=1)
        self._last = batch[:, -1:]
        return full

    def train_step(self) -> float:
        batch = self.next_batch()
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.config, self.step)
        # On a CPU without bf16 arithmetic, autocast would emulate it (products about 75x slower: models.cpu).
        use_bf16 = self.config.bf16 and (self.device.type == "cuda" or bf16_products_are_fast())
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_bf16):
            out = self.model(batch[:, :-1], self.state, self.memory)
        objective = self._objective(out.log_probs, batch[:, 1:])
        objective.backward()
        torch.nn.utils.clip_grad_norm_(self.optimizer.param_groups[0]["params"], self.config.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state = out.state
        if out.memory_kv is not None:
            self.memory.add(out.memory_kv.keys.float(), out.memory_kv.values.float())
        self.step += 1
        if self.config.recall_weight == 1.0:
            return objective.item()
        return self.model.loss(out.log_probs.detach(), batch[:, 1:]).item()  # the plain mean, for bits per byte

    def _objective(self, log_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross entropy, recall positions weighted by `recall_weight` (the targets are the streams'
        last `take`s)."""
        if self.config.recall_weight == 1.0:
            return self.model.loss(log_probs, targets)
        recalls = torch.tensor([list(stream.recalls) for stream in self.streams], device=self.device)
        weights = (1.0 + (self.config.recall_weight - 1.0) * recalls).reshape(-1)
        losses = F.nll_loss(log_probs.float().reshape(-1, log_probs.shape[-1]), targets.reshape(-1), reduction="none")
        return (losses * weights).sum() / weights.sum()

    def init_from(self, model_dir: Path) -> None:
        """Start from a saved model's weights (same architecture); optimizer and schedule start fresh.

        Parameters the saved model lacks (added to the architecture since) keep their initial values.
        """
        config, weights = HybridLM.read(model_dir)
        if config != self.model.config:
            raise ValueError(f"{model_dir} is a different architecture than preset {self.config.preset!r}")
        unexpected = set(weights) - set(self.model.state_dict())
        if unexpected:
            raise ValueError(f"{model_dir} has weights this architecture does not: {sorted(unexpected)}")
        self.model.load_state_dict({k: w.to(self.device) for k, w in weights.items()}, strict=False)
        self.initialized_from = str(model_dir)

    # -- checkpoints ---------------------------------------------------------------------------

    def _checkpoint_dir(self) -> Path:
        return self.out / f"step-{self.step:07d}"

    def save(self) -> Path:
        """Model, optimizer, data cursors, stream states and memories: everything to continue identically."""
        directory = self._checkpoint_dir()
        tmp = directory.with_name(directory.name + ".tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        self.model.save(tmp / "model")
        torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
        (tmp / "state.bin").write_bytes(self.state.to_bytes())
        save_file({name: t.contiguous().cpu() for name, t in self.memory.tensors().items()}, tmp / "memory.safetensors")
        meta = {
            "step": self.step,
            "config": asdict(self.config),
            "streams": [s.cursor() for s in self.streams],
            "last": self._last.tolist(),
            "history": self.history,
            "elapsed_seconds": self.elapsed_seconds,
            "initialized_from": self.initialized_from,
            "rng": torch.get_rng_state().tolist(),
        }
        (tmp / "trainer.json").write_text(json.dumps(meta))
        tmp.rename(directory)
        (self.out / "latest").write_text(directory.name)
        return directory

    def resume(self) -> bool:
        """Continue from the latest checkpoint under `out`, if there is one."""
        latest = self.out / "latest"
        if not latest.exists():
            return False
        directory = self.out / latest.read_text().strip()
        meta = json.loads((directory / "trainer.json").read_text())
        loaded = HybridLM.load(directory / "model", device=self.device)
        self.model.load_state_dict(loaded.state_dict())
        self.optimizer.load_state_dict(torch.load(directory / "optimizer.pt", weights_only=True))
        self.state = State.from_bytes((directory / "state.bin").read_bytes()).to(self.device)
        # The per-stream memories are large (rows x memory_tokens pairs); a checkpoint moved
        # between machines without them resumes with empty memories, which refill in a few steps.
        if (directory / "memory.safetensors").exists():
            self.memory.load_tensors(load_file(directory / "memory.safetensors", device=str(self.device)))
        for stream, cursor in zip(self.streams, meta["streams"]):
            stream.restore(cursor)
        self._last = torch.tensor(meta["last"], device=self.device)
        self.step, self.history = meta["step"], meta["history"]
        self.elapsed_seconds = meta.get("elapsed_seconds", 0.0)
        self.initialized_from = meta.get("initialized_from")
        torch.set_rng_state(torch.tensor(meta["rng"], dtype=torch.uint8))
        return True

    def run(self, progress: bool = True, max_seconds: float | None = None) -> None:
        """Train to `config.steps`, checkpointing every `checkpoint_every` steps and at the end.

        With `max_seconds`, stop (and checkpoint) once that much wall time has passed in
        this call, so a run can be spread over sessions of bounded length and resumed.
        """
        from tqdm import tqdm

        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        bytes_per_step = self.config.batch_size * self.config.chunk_tokens
        bar = tqdm(total=self.config.steps, initial=self.step, disable=not progress, unit="step", dynamic_ncols=True)
        smoothed = None
        while self.step < self.config.steps:
            started = time.perf_counter()
            loss = self.train_step()
            self.elapsed_seconds += time.perf_counter() - started
            smoothed = loss if smoothed is None else 0.98 * smoothed + 0.02 * loss
            self.history.append(
                {"step": self.step, "loss": round(loss, 4), "lr": learning_rate(self.config, self.step - 1)}
            )
            rate = bar.format_dict.get("rate") or 0.0
            bar.set_postfix(
                loss=f"{smoothed:.3f}", bpb=f"{smoothed / math.log(2):.3f}", bytes_s=f"{rate * bytes_per_step:,.0f}"
            )
            bar.update(1)
            out_of_time = deadline is not None and time.monotonic() >= deadline
            if self.step % self.config.checkpoint_every == 0 or self.step == self.config.steps or out_of_time:
                self.save()
            if out_of_time:
                break
        if not self._checkpoint_dir().exists():  # e.g. a zero-step run that only converts weights
            self.save()
        bar.close()
