"""Sampling a reply from a model: temperature, nucleus (top-p), repetition guards, seed; pieces
always valid UTF-8. Works for any model with the shared call shape and a `tokenizer`."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from models.layer_memory import LayerMemoryReader
from models.memory import MemoryReader
from models.model import ModelOutput
from models.protocol import LanguageModel
from models.state import State
from models.static_decode import RingState
from models.tokenizer import Utf8Pieces


@dataclass(frozen=True)
class SamplingConfig:
    # Defaults chosen by measurement (BENCHMARKS.md, "A model that talks"): replies that answer and
    # do not loop. Small models loop under plain sampling; the two guards below stop that.
    temperature: float = 0.3  # 0 means greedy
    top_p: float = 0.9  # sample from the smallest set of tokens holding this much probability
    seed: int | None = None  # fixes the sample for a given state and prompt
    max_bytes: int = 1024  # byte budget of one reply
    max_tokens: int | None = None  # token budget of one reply (its end of turn not counted); None: bytes only
    stop_at_end_of_turn: bool = True
    # End of turn is not sampled before this many bytes: a logged reply must hold at least one byte.
    min_bytes: int = 0
    # Logits of tokens already in this reply are divided by this (multiplied when negative); 1 is off.
    # 1.1 cost SmolLM2 three of 20 factual answers; the n-gram guard stops loops without that cost.
    repetition_penalty: float = 1.0
    # A token that would repeat an n-gram of tokens already in this reply is not sampled; 0 is off.
    # 4, not 6: a served conversation looped on a 5-token phrase ("I'm a friendly!") under 6.
    no_repeat_ngram: int = 4
    # Nor one of the session's last this-many replies: the default model copied its previous reply into every
    # later one of a conversation ("Elena, hello. Marco is nine years old." nine times); 0 is off.
    no_repeat_replies: int = 2
    # Nor open as one of the session's last this-many replies opened: a reply may share the first
    # OPENING_SHARED_TOKENS tokens of an earlier reply's first sentence, never more of it (nor all of a shorter
    # one). With its replies out of its context (agent.runtime) the default model still opened 4 of 10
    # conversations' replies with an earlier reply's sentence (BENCHMARKS.md, "Replies that open anew"); 0 is off.
    no_repeat_openings: int = 32

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.seed is not None and not 0 <= self.seed < 2**64:
            raise ValueError(f"seed must be in [0, 2**64), got {self.seed}")
        guards = (self.no_repeat_ngram, self.no_repeat_replies, self.no_repeat_openings)
        if self.repetition_penalty < 1 or min(guards) < 0:
            raise ValueError("need repetition_penalty >= 1, and no_repeat_ngram, no_repeat_replies and "
                             "no_repeat_openings >= 0")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}")
        if not 0 <= self.min_bytes <= self.max_bytes:
            raise ValueError(f"need 0 <= min_bytes <= max_bytes, got {self.min_bytes} and {self.max_bytes}")


# How much of an earlier reply's first sentence a reply may open with (`no_repeat_openings`): "The capital
# of" may open two answers, "I'm glad you're" not.
OPENING_SHARED_TOKENS = 3
# Temperatures below this sample greedily: a logit gap of 0.01 is already e^10 to 1 at 1e-3, and a
# float32 division by 1e-300 (0 in float32) made every probability nan.
GREEDY_BELOW = 1e-3
# Prompt tokens read per step of a reply's prefill (see Generation.__iter__).
PROMPT_CHUNK_TOKENS = 512

StopReason = Literal["end_of_turn", "max_bytes", "max_tokens"]
Decoder = Callable[..., ModelOutput]


def compile_decoder(model: LanguageModel) -> Decoder:
    """The model compiled for single-token steps (Inductor with its C++ wrapper).

    About twice the tokens/s of eager mode on CPU, where per-op overhead, not
    arithmetic, bounds decoding. The first calls compile (tens of seconds), so
    warm it up off the request path. Weights are read at call time, so in-place
    weight updates are seen without recompiling.
    """
    return torch.compile(model, options={"cpp_wrapper": True})


def banned_by_ngrams(reply: list[int], n: int, earlier: Sequence[Sequence[int]] = ()) -> list[int]:
    """Tokens that would complete an n-gram already present in `reply`, or in one of the `earlier` replies."""
    if n <= 0 or len(reply) < n - 1:
        return []
    tail = tuple(reply[len(reply) - n + 1 :])
    return [text[i + n - 1] for text in (reply, *earlier) for i in range(len(text) - n + 1)
            if tuple(text[i : i + n - 1]) == tail]


def first_sentence(reply: str) -> str:
    """A reply's first sentence: up to its first full stop, exclamation or question mark and a space."""
    return re.split(r"(?<=[.!?])\s", reply.strip(), maxsplit=1)[0]


def banned_by_openings(reply: list[int], openings: Sequence[Sequence[int]]) -> list[int]:
    """Tokens that would make `reply` open as one of the `openings` (earlier replies' first sentences) does:
    continue one past OPENING_SHARED_TOKENS tokens, or complete a shorter one."""
    n = len(reply)
    return [opening[n] for opening in openings if len(opening) > n and list(opening[:n]) == reply
            and (n >= OPENING_SHARED_TOKENS or n + 1 == len(opening))]


# The most tokens a reply takes back at one place for leading into a claim (`Generation._would_claim`).
MAX_REFUSED = 8


def banned_by_claims(reply: list[int], claims: Sequence[Sequence[int]]) -> list[int]:
    """Tokens that would complete one of the `claims` (token runs a reply never says) at `reply`'s end."""
    return [claim[-1] for claim in claims
            if len(claim) <= len(reply) + 1 and list(claim[:-1]) == reply[len(reply) - len(claim) + 1 :]]


@dataclass(frozen=True)
class ReplyGuards:
    """What a reply must not say, from the session it answers in (each guard measured: SamplingConfig)."""

    earlier: Sequence[Sequence[int]] = ()  # the session's recent replies: no n-gram of theirs is sampled again
    openings: Sequence[Sequence[int]] = ()  # earlier replies' first sentences: the reply does not open as they did
    # Token runs never completed, such as the user's name claimed as the reply's own ("I'm Quentin"): the
    # default model answered "Hi! I'm Quentin." with "I'm Quentin, the AI assistant."
    claims: Sequence[Sequence[int]] = ()

    def banned(self, reply: list[int], sampling: SamplingConfig) -> list[int]:
        return (banned_by_ngrams(reply, sampling.no_repeat_ngram, self.earlier)
                + banned_by_openings(reply, self.openings) + banned_by_claims(reply, self.claims))


def sample_token(logits: torch.Tensor, sampling: SamplingConfig, generator: torch.Generator | None,
                 allowed: torch.Tensor, reply: list[int] = (), guards: ReplyGuards = ReplyGuards(),
                 refused: Sequence[int] = ()) -> int:
    """One token id from (V,) logits, among `allowed` ((V,) bool), guarded against repeating `reply`, against
    what the session's `guards` forbid, and never one of `refused` (taken back at this place already)."""
    logits = logits.float().clone()
    logits[: len(allowed)][~allowed] = float("-inf")
    logits[len(allowed) :] = float("-inf")  # an embedding padded past the vocabulary
    if sampling.repetition_penalty != 1 and reply:
        seen = torch.tensor(sorted(set(reply)))
        picked = logits[seen]
        logits[seen] = torch.where(picked > 0, picked / sampling.repetition_penalty,
                                   picked * sampling.repetition_penalty)
    reply = list(reply)
    banned = guards.banned(reply, sampling) + list(refused)
    if banned:
        guarded = logits.clone()
        guarded[banned] = float("-inf")
        if not torch.isinf(guarded).all():  # a guard never leaves nothing to say
            logits = guarded
    if sampling.temperature < GREEDY_BELOW:
        return int(logits.argmax())
    probs = torch.softmax(logits / sampling.temperature, dim=-1)
    if sampling.top_p < 1:
        sorted_probs, order = probs.sort(descending=True)
        before = sorted_probs.cumsum(0) - sorted_probs  # mass strictly above each token
        # The most likely token always stays (a top_p below float32's smallest number would drop it).
        sorted_probs[1:][before[1:] >= sampling.top_p] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator))


class Generation:
    """Iterate for text pieces; afterwards `state`, `tokens` and `stop_reason` describe the reply.

    Every sampled token but a stop token is fed back, so `state` has read the whole reply except
    its end; the caller closes the turn (the format's `turn_end`) whichever way it stopped.
    `on_read` sees the output of every read (e.g. to make its pairs searchable at once: memory.recent).
    """

    def __init__(
        self,
        model: LanguageModel,
        prompt: torch.Tensor,
        state: State | None,
        memory: MemoryReader | LayerMemoryReader | None,
        sampling: SamplingConfig,
        decoder: Decoder | None = None,
        on_read: Callable[[ModelOutput], None] | None = None,
        guards: ReplyGuards = ReplyGuards(),
        mark: int | None = None,
    ):
        if prompt.dim() != 2 or prompt.shape[0] != 1:
            raise ValueError("generation takes one stream at a time: prompt must be (1, T)")
        if mark is not None and not 0 < mark < prompt.shape[1]:
            raise ValueError(f"mark must fall inside the prompt (1..{prompt.shape[1] - 1}), got {mark}")
        self.model, self.prompt, self.memory, self.sampling = model, prompt, memory, sampling
        self.decoder = model if decoder is None else decoder
        self.on_read = on_read
        self.guards = guards
        self.state = state
        self.mark = mark
        # The state after the prompt's first `mark` tokens (a chat turn keeps it: the message read without the
        # assistant's prefix), read on the way to the reply rather than read again after it.
        self.marked_state: State | None = None
        self.tokens: list[int] = []
        self.stop_reason: StopReason | None = None

    def __iter__(self) -> Iterator[str]:
        generator = None
        if self.sampling.seed is not None:
            generator = torch.Generator(device="cpu").manual_seed(self.sampling.seed)
        tokenizer = self.model.tokenizer
        content = tokenizer.generatable()
        stops = sorted(tokenizer.chat.stop_tokens)
        content[stops] = False
        with_stop = content.clone()
        with_stop[stops] = self.sampling.stop_at_end_of_turn
        pieces = Utf8Pieces()
        emitted_bytes = 0
        with torch.inference_mode():
            prompt = self.prompt.to(self.model.device)
            if self.mark is not None:
                self._read_in_chunks(prompt[:, : self.mark])
                self.marked_state, prompt = self.state, prompt[:, self.mark :]
            if self.on_read is not None and prompt.shape[1] > 1:
                # What is read becomes searchable only once read: all but the prompt's last token first,
                # so that the step sampling the first token can recall from the prompt itself.
                self._read(self.model, prompt[:, :-1])
                prompt = prompt[:, -1:]
            else:
                # A long prompt in chunks: attention written op by op holds a (tokens x keys) score matrix
                # per head, and one of 1,782 tokens read 2.2x slower than four chunks (BENCHMARKS.md, "Reading
                # a long message"). Without on_read nothing is searched from the prompt, so the reply is the
                # same; a prompt of one chunk is read in one call, as before.
                prompt = self._read_in_chunks(prompt, keep_last=True)
            out, refused = self._read(self.model, prompt), []
            while emitted_bytes < self.sampling.max_bytes:
                allowed = with_stop if emitted_bytes >= self.sampling.min_bytes else content
                token = sample_token(out.log_probs[0, -1].cpu(), self.sampling, generator, allowed, self.tokens,
                                     self.guards, refused)
                if token in tokenizer.chat.stop_tokens:
                    self.stop_reason = "end_of_turn"
                    break
                before = self.state
                read = self._read(self.decoder, torch.tensor([[token]], device=self.model.device))
                if self._would_claim(token, read) and len(refused) < MAX_REFUSED:
                    # A state is never written in place, and a static decoder's ring takes back one step
                    # (models.static_decode): the one before is intact.
                    self.state = before
                    refused.append(token)
                    continue
                self.tokens.append(token)
                out, refused = read, []
                data = tokenizer.token_bytes(token)
                emitted_bytes += len(data)
                piece = pieces.push(data)
                if piece:
                    yield piece
                if self.sampling.max_tokens is not None and len(self.tokens) >= self.sampling.max_tokens:
                    self.stop_reason = "max_tokens"
                    break
            else:
                self.stop_reason = "max_bytes"
            if isinstance(self.state, RingState):  # a static decoder's window, written in place: frozen for keeps
                self.state = self.state.freeze()
        tail = pieces.flush()
        if tail:
            yield tail

    def _read_in_chunks(self, tokens: torch.Tensor, keep_last: bool = False) -> torch.Tensor:
        """Read `tokens` PROMPT_CHUNK_TOKENS at a time; with `keep_last`, all but a last chunk, which is returned
        unread (the caller's read of it gives the first token's distribution)."""
        while tokens.shape[1] > (PROMPT_CHUNK_TOKENS if keep_last else 0):
            self._read(self.model, tokens[:, :PROMPT_CHUNK_TOKENS])
            tokens = tokens[:, PROMPT_CHUNK_TOKENS:]
        return tokens

    def _would_claim(self, token: int, read: ModelOutput) -> bool:
        """Whether, having said `token`, the reply would go on to complete a claim ("I'm" then the user's name):
        the token is then taken back, so that the reply says something else there rather than a name not the
        user's ("Hello, I'm Alessandro." to "Can you remind me what my name is?", Ignatius). Only where what
        is read leaves no trace (no `on_read`)."""
        if not self.guards.claims or self.on_read is not None:
            return False
        claimed = banned_by_claims([*self.tokens, token], self.guards.claims)
        return bool(claimed) and int(read.log_probs[0, -1].argmax()) in claimed

    def _read(self, model: LanguageModel | Decoder, tokens: torch.Tensor) -> ModelOutput:
        out = model(tokens, self.state, self.memory, last_only=True)
        self.state = out.state
        if self.on_read is not None:
            self.on_read(out)
        return out

    @property
    def reply(self) -> bytes:
        return b"".join(self.model.tokenizer.token_bytes(t) for t in self.tokens)


def generate(
    model: LanguageModel,
    prompt: torch.Tensor,
    *,
    state: State | None = None,
    memory: MemoryReader | LayerMemoryReader | None = None,
    sampling: SamplingConfig = SamplingConfig(),
    decoder: Decoder | None = None,
    on_read: Callable[[ModelOutput], None] | None = None,
    guards: ReplyGuards = ReplyGuards(),
    mark: int | None = None,
) -> Generation:
    """Sample a reply to `prompt`; `decoder` (e.g. compile_decoder(model)) runs the single-token steps;
    `on_read` sees every read's output (the prompt is then read in two parts: all but its last token, then that);
    `guards`: what the session forbids the reply to say (`ReplyGuards`); `mark`: keep the state after the prompt's
    first `mark` tokens as `marked_state`."""
    return Generation(model, prompt, state, memory, sampling, decoder, on_read, guards, mark)
