"""How an agent's events become the tokens its model reads, and where those tokens sit in the stream.

The one definition the serving runtime, the learner and the benchmarks share: a chat session's
stream is BEGIN, then per event a role marker, the content's bytes and END_OF_TURN; a document's
stream is the DOCUMENT marker, then its chunk events' bytes. A reply is read as the assistant's
turn: the runtime reads the unread events and the ASSISTANT marker, samples, and the learner later
reads the same tokens from the log. Memories keep the byte span of the tokens they came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from memory.ids import MAX_SPAN_TOKENS
from memory.schema import Event
from memory.store import Span
from models import ByteTokenizer, Special
from models.tokenizer import NUM_BYTES

STREAM_START = int(Special.BEGIN)  # a stream's first input: its state has read nothing before it
REPLY_START = int(Special.ASSISTANT)  # what a chat turn reads before it samples its reply
TURN_END = int(Special.END_OF_TURN)  # what closes a turn; a reply cut at max_bytes is closed with it
# Tokens a chat event adds besides its bytes: its role marker and END_OF_TURN.
TURN_MARKERS = len(ByteTokenizer().encode_turn("user", b""))


def event_tokens(event: Event) -> list[int]:
    """The tokens an event adds to its session's stream (the serving runtime reads the same).

    A chat event is one turn: role marker, bytes, end of turn. A document's chunk events are one
    stream: the document marker before its first chunk, bytes only after.
    """
    if event.document_id is not None:
        marker = [int(Special.DOCUMENT)] if event.seq == 0 else []
        return marker + list(event.content)
    return ByteTokenizer().encode_turn(event.role, event.content)


def chat_position_after(event: Event) -> int:
    """Tokens a chat session's stream has read once it has read `event`: STREAM_START, then per event
    what `event_tokens` gives, found without loading the earlier events."""
    return 1 + event.byte_offset + len(event.content) + TURN_MARKERS * (event.seq + 1)


def turn_prompt(unread: Sequence[Event], *, stream_starts: bool) -> list[int]:
    """What a chat turn reads before it samples: the events its state has not read, then REPLY_START."""
    prompt = [STREAM_START] if stream_starts else []
    for event in unread:
        prompt += event_tokens(event)
    return [*prompt, REPLY_START]


@dataclass(frozen=True)
class EventReading:
    """The tokens a stream reads for one event: the token before it (its first input, so that every
    token is a target exactly once), then the event's own; and the stream byte offset of each."""

    event: Event
    tokens: list[int]
    byte_starts: list[int]  # len(tokens) + 1 entries: stream bytes before each token, and after the last

    @classmethod
    def after(cls, event: Event, last_token: int) -> EventReading:
        tokens = [last_token, *event_tokens(event)]
        base = event.byte_offset - (tokens[0] < NUM_BYTES)  # stream offset of tokens[0], if it is a byte
        starts = [base]
        for token in tokens:
            starts.append(starts[-1] + (token < NUM_BYTES))
        return cls(event, tokens, starts)

    def memory_spans(self, start: int, keys: torch.Tensor, values: torch.Tensor, weight_version: int) -> list[Span]:
        """Memory rows for the pairs of input tokens tokens[start : start + T]; keys/values: (T, D)."""
        spans = []
        tokenizer = ByteTokenizer()
        for offset in range(0, keys.shape[0], MAX_SPAN_TOKENS):
            first, end = start + offset, min(start + offset + MAX_SPAN_TOKENS, start + keys.shape[0])
            spans.append(Span(
                keys=keys[offset : offset + end - first], values=values[offset : offset + end - first],
                text=tokenizer.decode(self.tokens[first:end]), byte_start=self.byte_starts[first],
                byte_end=self.byte_starts[end], event_id=self.event.id, document_id=self.event.document_id,
                session_id=self.event.session_id, weight_version=weight_version))
        return spans
