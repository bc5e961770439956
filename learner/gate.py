"""The behavioural gate: every `gate_every` learned events (LearningConfig), the learned weights answer a small
fixed probe set, and so did the last weights that passed; weights that do worse beyond the probes' noise are
refused, and learning goes on from the last good weights. The refused version is still published, with its
reason and the last good weights, so serving never reads refused weights and no event is lost (its memories
are kept, and it stays learned).

Probes, greedy and without memory, so a score depends on the weights alone:
- plain questions with known answers (QUESTIONS; none of the benchmarks' probes);
- a short exchange (EXCHANGE) whose replies must not degenerate (`degenerate`);
- bits per byte of a fixed text (TEXT).

Exactly once and exact forgetting: the gate's state (the last good weights and their scores) travels inside
the weights themselves, under `gate/` names (`GateState.carried`), so a version, a forget job's checkpoint and
a rollback carry it unchanged; and the gate falls due by the count of the agent's learned events not forgotten,
so a replay gates where an agent that never read the forgotten events would have.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass

import torch
from torch import nn

from learner.evaluate import bits_per_byte
from memory.schema import Event
from memory.stream_format import turn_prompt
from models import LanguageModel, SamplingConfig, generate
from models.generate import Decoder, first_sentence
from models.quantize import int8_kernel_available, quantize_weights
from models.static_decode import StaticDecoder, static_decoding_fits

# (question, accepted answers).
QUESTIONS = [
    ("What is the capital of Italy?", ["rome"]),
    ("What is the capital of Japan?", ["tokyo"]),
    ("What is the capital of Spain?", ["madrid"]),
    ("What is 3 + 4?", ["7", "seven"]),
    ("What is 10 minus 2?", ["8", "eight"]),
    ("What color is the sky on a clear day?", ["blue"]),
    ("What animal barks?", ["dog"]),
    ("How many days are in a week?", ["7", "seven"]),
]
# A user telling about themselves, then asking: where a collapsing model opens every reply alike.
EXCHANGE = ["Hi, I'm Tomas and I teach chemistry in Porto.", "My daughter Ana is six years old.",
            "We have a cat called Pepper.", "What is the capital of France?", "How many legs does a spider have?",
            "What is my daughter's name?"]
TEXT = (b"The library opens at nine in the morning and closes at six in the evening. Members may borrow up to "
        b"five books at a time, for three weeks each. Late returns cost ten cents a day. The reading room on the "
        b"second floor is quiet; group study rooms can be booked at the front desk.")
ANSWER = SamplingConfig(temperature=0.0, max_tokens=24)
REPLY = SamplingConfig(temperature=0.0, max_tokens=40)
# A question may flip either way with the slightest change of weights; one is within the probes' noise.
QUESTION_SLACK = 1
# Relative rise of the text's bits per byte taken as noise.
BITS_SLACK = 0.02
PREFIX = "gate/"  # names of the gate's state inside a weights dict (no parameter name holds a "/")


@dataclass(frozen=True)
class Scores:
    answered: int  # of QUESTIONS
    degenerate: int  # of EXCHANGE's replies
    bits_per_byte: float  # of TEXT

    def as_tensor(self) -> torch.Tensor:
        return torch.tensor([self.answered, self.degenerate, self.bits_per_byte], dtype=torch.float64)

    @classmethod
    def from_tensor(cls, tensor: torch.Tensor) -> Scores:
        answered, degenerate, bits = tensor.tolist()
        return cls(int(answered), int(degenerate), bits)

    def as_dict(self) -> dict:
        return {"answered": self.answered, "questions": len(QUESTIONS), "degenerate": self.degenerate,
                "replies": len(EXCHANGE), "bits_per_byte": round(self.bits_per_byte, 4)}


def answered(reply: str, answers: list[str]) -> bool:
    return any(re.search(rf"\b{re.escape(answer)}", reply.lower()) for answer in answers)


def opening(reply: str) -> str:
    """A reply's first sentence, lower-cased."""
    return first_sentence(reply).lower()


def degenerate(replies: list[str]) -> list[bool]:
    """Per reply: it opens with the sentence an earlier reply opened with, or repeats a 4-gram three times."""
    flags, seen = [], set()
    for reply in replies:
        words = reply.lower().split()
        grams = [tuple(words[i : i + 4]) for i in range(len(words) - 3)]
        looping = any(grams.count(gram) >= 3 for gram in set(grams))
        first = opening(reply)
        flags.append(looping or (bool(first) and first in seen))
        seen.add(first)
    return flags


def reply_to(model: LanguageModel, turns: list[tuple[str, bytes]], sampling: SamplingConfig,
             decoder: Decoder | None = None) -> str:
    events = [Event(role=role, content=content, seq=seq, document_id=None) for seq, (role, content) in enumerate(turns)]
    prompt = turn_prompt(events, model.tokenizer, stream_starts=True)
    generation = generate(model, torch.tensor([prompt]), state=None, memory=None, sampling=sampling,
                          decoder=decoder)
    for _ in generation:
        pass
    return generation.reply.decode("utf-8", errors="replace")


@torch.inference_mode()
def probe(model: LanguageModel, *, compiled: bool = False) -> Scores:
    """The probe set's scores of `model` as it is; `compiled`: its replies decoded as serving decodes them with
    Settings.compiled_decode (models.static_decode), where the model decodes so (and its probe is decode-bound)."""
    decoder = StaticDecoder(model) if compiled and static_decoding_fits(model) else None
    plain = sum(answered(reply_to(model, [("user", question.encode())], ANSWER, decoder), answers)
                for question, answers in QUESTIONS)
    turns: list[tuple[str, bytes]] = []
    replies = []
    for message in EXCHANGE:
        turns.append(("user", message.encode()))
        replies.append(reply_to(model, turns, REPLY, decoder))
        turns.append(("assistant", replies[-1].encode()))
    return Scores(plain, sum(degenerate(replies)), bits_per_byte(model, TEXT))


def judge(candidate: Scores, good: Scores) -> str | None:
    """Why `candidate` does worse than `good` beyond the probes' noise; None when it does not."""
    reasons = []
    if candidate.answered < good.answered - QUESTION_SLACK:
        reasons.append(f"answered {candidate.answered} of {len(QUESTIONS)} plain questions, the last good "
                       f"weights {good.answered}")
    if candidate.degenerate > good.degenerate:
        reasons.append(f"{candidate.degenerate} of {len(EXCHANGE)} replies of the probe exchange degenerate, the "
                       f"last good weights' {good.degenerate}")
    if candidate.bits_per_byte > good.bits_per_byte * (1 + BITS_SLACK):
        reasons.append(f"read the probe text at {candidate.bits_per_byte:.4f} bits per byte, the last good weights "
                       f"at {good.bits_per_byte:.4f}")
    return "; ".join(reasons) or None


def due(learned_before: int, events: int, every: int) -> bool:
    """Whether a batch of `events`, after `learned_before` learned events, ends a gate's window."""
    return every > 0 and (learned_before + events) // every > learned_before // every


@dataclass
class GateState:
    """The last weights that passed (None: the current ones) and their scores (None: not probed yet)."""

    good: dict[str, torch.Tensor] | None = None
    scores: Scores | None = None

    def carried(self) -> dict[str, torch.Tensor]:
        """The state as entries of a weights dict (`PREFIX` names)."""
        out = {f"{PREFIX}good/{name}": tensor for name, tensor in (self.good or {}).items()}
        if self.scores is not None:
            out[f"{PREFIX}scores"] = self.scores.as_tensor()
        return out

    @classmethod
    def read(cls, weights: dict[str, torch.Tensor]) -> GateState:
        good = {name.removeprefix(f"{PREFIX}good/"): tensor for name, tensor in weights.items()
                if name.startswith(f"{PREFIX}good/")}
        scores = weights.get(f"{PREFIX}scores")
        return cls(good or None, Scores.from_tensor(scores) if scores is not None else None)


def serving_weights(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What a version serves: the last weights that passed a gate (its own when no window is open)."""
    good = GateState.read(weights).good
    return good if good is not None else {name: t for name, t in weights.items() if not name.startswith(PREFIX)}


def open_window(state: GateState, params: dict[str, nn.Parameter]) -> None:
    """Before learning moves `params`: keep them as the last good weights, unless a window is open already."""
    if state.good is None:
        state.good = {name: param.detach().clone() for name, param in params.items()}


@torch.no_grad()
def close_window(state: GateState, model: LanguageModel, params: dict[str, nn.Parameter], *, int8: bool,
                 compiled: bool = False) -> Verdict:
    """The gate: probe the learned weights and (once) the last good ones, as serving would hold them (`int8`:
    a quantized copy, where the model serves so; `compiled`: decoded by the compiled step); refused, `params` go
    back to the last good weights. After it the current weights are the last good ones, with their scores."""
    current = {name: param.detach().clone() for name, param in params.items()}
    good = state.good if state.good is not None else current
    candidate = probe(_as_served(model, int8), compiled=compiled)
    if state.scores is None:
        _set(params, good)
        state.scores = probe(_as_served(model, int8), compiled=compiled)
        _set(params, current)
    verdict = Verdict(judge(candidate, state.scores), candidate, state.scores)
    if verdict.reason is not None:
        _set(params, good)
    else:
        state.scores = candidate
    state.good = None
    return verdict


def _as_served(model: LanguageModel, int8: bool) -> LanguageModel:
    if int8 and model.capabilities.int8_serving and int8_kernel_available():
        return quantize_weights(copy.deepcopy(model)).eval()
    return model


def _set(params: dict[str, nn.Parameter], values: dict[str, torch.Tensor]) -> None:
    for name, param in params.items():
        param.copy_(values[name])


@dataclass(frozen=True)
class Verdict:
    reason: str | None  # None: passed
    candidate: Scores
    good: Scores

    def record(self) -> dict:
        """As a version records it (the API's `gate`)."""
        return {"passed": self.reason is None, "reason": self.reason, "scores": self.candidate.as_dict(),
                "last_good_scores": self.good.as_dict()}
