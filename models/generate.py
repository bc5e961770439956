"""Sampling from a HybridLM: temperature, nucleus (top-p), seed; pieces always valid UTF-8."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import torch

from models.memory import MemoryReader
from models.model import HybridLM, ModelOutput
from models.state import State
from models.tokenizer import NUM_BYTES, Special, Utf8Pieces


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 0.8  # 0 means greedy
    top_p: float = 0.95  # sample from the smallest set of tokens holding this much probability
    seed: int | None = None  # fixes the sample for a given state and prompt
    max_bytes: int = 1024  # byte budget of one reply
    stop_at_end_of_turn: bool = True
    # End of turn is not sampled before this many bytes: a logged reply must hold at least one byte.
    min_bytes: int = 0

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0 <= self.min_bytes <= self.max_bytes:
            raise ValueError(f"need 0 <= min_bytes <= max_bytes, got {self.min_bytes} and {self.max_bytes}")


StopReason = Literal["end_of_turn", "max_bytes"]
Decoder = Callable[..., ModelOutput]


def compile_decoder(model: HybridLM) -> Decoder:
    """The model compiled for single-token steps (Inductor with its C++ wrapper).

    About twice the tokens/s of eager mode on CPU, where per-op overhead, not
    arithmetic, bounds decoding. The first calls compile (tens of seconds), so
    warm it up off the request path. Weights are read at call time, so in-place
    weight updates are seen without recompiling.
    """
    return torch.compile(model, options={"cpp_wrapper": True})


def sample_token(logits: torch.Tensor, sampling: SamplingConfig, generator: torch.Generator | None,
                 allow_end: bool = True) -> int:
    """One token id from (V,) logits. Only bytes and (when `allow_end`) end-of-turn may be produced."""
    logits = logits.float().clone()
    allowed = torch.zeros_like(logits, dtype=torch.bool)
    allowed[:NUM_BYTES] = True
    allowed[int(Special.END_OF_TURN)] = sampling.stop_at_end_of_turn and allow_end
    logits[~allowed] = float("-inf")
    if sampling.temperature == 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / sampling.temperature, dim=-1)
    if sampling.top_p < 1:
        sorted_probs, order = probs.sort(descending=True)
        before = sorted_probs.cumsum(0) - sorted_probs  # mass strictly above each token
        sorted_probs[before >= sampling.top_p] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator))


class Generation:
    """Iterate for text pieces; afterwards `state`, `tokens` and `stop_reason` describe the reply.

    Every sampled token (end-of-turn included) is fed back, so `state` has read
    the whole reply and the stream can continue from it. `on_read` sees the output of
    every read (e.g. to make its pairs searchable at once: memory.recent).
    """

    def __init__(
        self,
        model: HybridLM,
        prompt: torch.Tensor,
        state: State | None,
        memory: MemoryReader | None,
        sampling: SamplingConfig,
        decoder: Decoder | None = None,
        on_read: Callable[[ModelOutput], None] | None = None,
    ):
        if prompt.dim() != 2 or prompt.shape[0] != 1:
            raise ValueError("generation takes one stream at a time: prompt must be (1, T)")
        self.model, self.prompt, self.memory, self.sampling = model, prompt, memory, sampling
        self.decoder = model if decoder is None else decoder
        self.on_read = on_read
        self.state = state
        self.tokens: list[int] = []
        self.stop_reason: StopReason | None = None

    def __iter__(self) -> Iterator[str]:
        generator = None
        if self.sampling.seed is not None:
            generator = torch.Generator(device="cpu").manual_seed(self.sampling.seed)
        pieces = Utf8Pieces()
        emitted_bytes = 0
        with torch.inference_mode():
            prompt = self.prompt.to(self.model.device)
            if self.on_read is not None and prompt.shape[1] > 1:
                # What is read becomes searchable only once read: all but the prompt's last token first,
                # so that the step sampling the first token can recall from the prompt itself.
                self._read(self.model, prompt[:, :-1])
                prompt = prompt[:, -1:]
            out = self._read(self.model, prompt)
            while emitted_bytes < self.sampling.max_bytes:
                token = sample_token(out.log_probs[0, -1].cpu(), self.sampling, generator,
                                     allow_end=emitted_bytes >= self.sampling.min_bytes)
                self.tokens.append(token)
                out = self._read(self.decoder, torch.tensor([[token]], device=self.model.device))
                if token == Special.END_OF_TURN:
                    self.stop_reason = "end_of_turn"
                    break
                emitted_bytes += 1
                piece = pieces.push(token)
                if piece:
                    yield piece
            else:
                self.stop_reason = "max_bytes"
        tail = pieces.flush()
        if tail:
            yield tail

    def _read(self, model: HybridLM | Decoder, tokens: torch.Tensor) -> ModelOutput:
        out = model(tokens, self.state, self.memory)
        self.state = out.state
        if self.on_read is not None:
            self.on_read(out)
        return out


def generate(
    model: HybridLM,
    prompt: torch.Tensor,
    *,
    state: State | None = None,
    memory: MemoryReader | None = None,
    sampling: SamplingConfig = SamplingConfig(),
    decoder: Decoder | None = None,
    on_read: Callable[[ModelOutput], None] | None = None,
) -> Generation:
    """Sample a reply to `prompt`; `decoder` (e.g. compile_decoder(model)) runs the single-token steps;
    `on_read` sees every read's output (the prompt is then read in two parts: all but its last token, then that)."""
    return Generation(model, prompt, state, memory, sampling, decoder, on_read)
