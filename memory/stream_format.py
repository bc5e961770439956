"""How an agent's events become the tokens its model reads, in the model's own chat format.

The one definition the serving runtime, the learner and the benchmarks share. A chat session's
stream is the format's `chat_start`, then per event one turn (role prefix, content, turn end); a
document's stream is `document_start`, then its chunk events' content. A stream's first token is
its first input (nothing predicts it); the rest of the start is read with the stream's first event.
A session whose first event is a system turn reads it in place of a default system prompt. A reply is read
as the assistant's turn: the runtime reads the unread events and the assistant
prefix, samples, and closes the turn; the learner later reads the same turn from the log.

Memories keep byte spans of event content: template tokens ("user\\n", the system prompt) carry
no content bytes, so offsets count content tokens only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from memory.ids import MAX_SPAN_TOKENS
from memory.schema import Event
from memory.store import Span
from models.tokenizer import Tokenizer


def _stream_start(event: Event, tokenizer: Tokenizer) -> tuple[int, ...]:
    return tokenizer.chat.document_start if event.document_id is not None else tokenizer.chat.chat_start


def stream_start(event: Event, tokenizer: Tokenizer) -> int:
    """The first input of the stream `event` begins."""
    return _stream_start(event, tokenizer)[0]


def _opens_with_system_turn(start: tuple[int, ...], tokenizer: Tokenizer) -> bool:
    """Whether a chat stream's start is a default system turn (ChatML's "You are a helpful AI assistant ..."):
    a session whose first event is a system turn reads that instead, as the model's template would."""
    system = tokenizer.chat.prefix("system")
    return len(start) > len(system) and start[: len(system)] == system


def event_reading_tokens(event: Event, tokenizer: Tokenizer, *, starts_stream: bool,
                         content: list[int] | None = None) -> tuple[list[int], list[int]]:
    """The tokens an event adds to its stream, and how many content bytes each carries. `starts_stream`: the
    event is the first its stream reads (its session's seq 0, or the first left after a forget), so the rest
    of the stream's start (a chat format's system prompt) is read with it. `content`: the event's content
    tokens, when the caller has them."""
    content = tokenizer.encode(event.content) if content is None else content
    lengths = [len(tokenizer.token_bytes(t)) for t in content]
    start = _stream_start(event, tokenizer)
    before = list(start[1:]) if starts_stream else []
    if event.document_id is not None:
        after: list[int] = []
    elif starts_stream and event.role == "system" and _opens_with_system_turn(start, tokenizer):
        before = list(start[1 : len(tokenizer.chat.prefix("system"))])  # the session's own system turn instead
        after = list(tokenizer.chat.turn_end)
    else:
        before += tokenizer.chat.prefix(event.role)
        after = list(tokenizer.chat.turn_end)
    return [*before, *content, *after], [0] * len(before) + lengths + [0] * len(after)


def event_tokens(event: Event, tokenizer: Tokenizer, *, starts_stream: bool = False,
                 content: list[int] | None = None) -> list[int]:
    """The tokens an event adds to its session's stream (the serving runtime reads the same)."""
    return event_reading_tokens(event, tokenizer, starts_stream=starts_stream, content=content)[0]


def turn_prompt(unread: Sequence[Event], tokenizer: Tokenizer, *, stream_starts: bool,
                message: list[int] | None = None, replies: bool = True) -> list[int]:
    """What a chat turn reads before it samples: the events its state has not read, then the
    assistant's turn prefix. `message`: the last event's content tokens, when the caller has them.
    `replies`: whether the assistant's earlier replies are read (Settings.context_holds_replies)."""
    if not replies:
        unread = [event for event in unread if event.role != "assistant"]
    prompt = [stream_start(unread[0], tokenizer)] if stream_starts and unread else []
    for number, event in enumerate(unread):
        content = message if number == len(unread) - 1 else None
        prompt += event_tokens(event, tokenizer, starts_stream=stream_starts and number == 0, content=content)
    return [*prompt, *tokenizer.chat.prefix("assistant")]


@dataclass(frozen=True)
class EventReading:
    """The tokens a stream reads for one event: the token before it (its first input, so that every
    token is a target exactly once), then the event's own; and the content byte offset of each."""

    event: Event
    tokens: list[int]
    byte_starts: list[int]  # len(tokens) + 1 entries: stream content bytes before each token, and after the last
    tokenizer: Tokenizer

    @classmethod
    def after(cls, event: Event, last_token: int | None, tokenizer: Tokenizer) -> EventReading:
        """`last_token`: the stream's last token read so far; None when `event` starts the stream."""
        first = stream_start(event, tokenizer) if last_token is None else last_token
        tokens, lengths = event_reading_tokens(event, tokenizer, starts_stream=last_token is None)
        # Only a document's previous chunk ends in content; a turn ends in its template's tokens.
        continues = last_token is not None and event.document_id is not None and event.seq > 0
        first_length = len(tokenizer.token_bytes(first)) if continues else 0
        starts = [event.byte_offset - first_length]
        for length in [first_length, *lengths]:
            starts.append(starts[-1] + length)
        return cls(event, [first, *tokens], starts, tokenizer)

    def content(self, first: int, end: int) -> bytes:
        """The content bytes of tokens[first:end]."""
        return b"".join(self.tokenizer.token_bytes(t) for t, a, b in zip(
            self.tokens[first:end], self.byte_starts[first:end], self.byte_starts[first + 1 : end + 1]) if b > a)

    def memory_spans(self, start: int, keys: torch.Tensor, values: torch.Tensor, weight_version: int,
                     position: int | None = None) -> list[Span]:
        """Memory rows for the pairs of input tokens tokens[start : start + T]; keys/values: (T, ...).
        `position`: the stream position of tokens[start], recorded per row (memory layers need it)."""
        spans = []
        for offset in range(0, keys.shape[0], MAX_SPAN_TOKENS):
            first, end = start + offset, min(start + offset + MAX_SPAN_TOKENS, start + keys.shape[0])
            spans.append(Span(
                keys=keys[offset : offset + end - first], values=values[offset : offset + end - first],
                text=self.content(first, end), byte_start=self.byte_starts[first],
                byte_end=self.byte_starts[end], event_id=self.event.id, document_id=self.event.document_id,
                session_id=self.event.session_id, weight_version=weight_version,
                token_start=None if position is None else position + offset))
        return spans
