"""How events become tokens and positions: one definition, consistent with itself."""

import torch

from learner.stream_format import (
    REPLY_START,
    STREAM_START,
    TURN_END,
    EventReading,
    chat_position_after,
    event_tokens,
    turn_prompt,
)
from memory.schema import Event
from models import Special


def chat_log(contents: list[bytes]) -> list[Event]:
    events, offset = [], 0
    for seq, content in enumerate(contents):
        events.append(Event(id=seq + 1, session_id=7, seq=seq, role=("user", "assistant")[seq % 2], content=content,
                            byte_offset=offset))
        offset += len(content)
    return events


def test_the_position_after_each_chat_event_counts_the_tokens_read_up_to_it():
    events = chat_log([b"hello", "d\u00e9j\u00e0 vu".encode(), b"x", b"a longer message\n" * 9])
    read = [STREAM_START]
    for event in events:
        read += event_tokens(event)
        assert chat_position_after(event) == len(read)


def test_a_turn_prompt_is_what_the_learner_reads_before_the_reply():
    events = chat_log([b"first", b"reply", b"second"])
    prompt = turn_prompt(events, stream_starts=True)
    assert prompt[0] == STREAM_START and prompt[-1] == REPLY_START
    assert prompt[1:-1] == [t for event in events for t in event_tokens(event)]
    assert turn_prompt(events[2:], stream_starts=False) == [*event_tokens(events[2]), REPLY_START]
    assert event_tokens(events[0])[-1] == TURN_END


def test_document_chunks_are_one_stream_with_one_marker():
    first = Event(document_id=3, seq=0, role="document", content=b"abc", byte_offset=0)
    second = Event(document_id=3, seq=1, role="document", content=b"def", byte_offset=3)
    assert event_tokens(first) == [int(Special.DOCUMENT), *b"abc"]
    assert event_tokens(second) == list(b"def")


def test_memory_spans_carry_the_exact_bytes_and_offsets_of_their_tokens():
    events = chat_log([b"hi there", b"general kenobi"])
    reading = EventReading.after(events[1], last_token=TURN_END)  # the previous turn's end is the first input
    inputs = len(reading.tokens) - 1
    keys = torch.randn(inputs, 4)
    spans = reading.memory_spans(0, keys, keys, weight_version=2)
    text = b"".join(span.text for span in spans)
    assert text == b"general kenobi"
    assert spans[0].byte_start == events[1].byte_offset and spans[-1].byte_end == events[1].byte_offset + len(text)
    # A byte carried in as the first input belongs to the event before.
    carried = EventReading.after(events[1], last_token=ord("e"))
    assert carried.byte_starts[0] == events[1].byte_offset - 1
