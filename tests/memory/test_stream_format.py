"""How events become tokens: one definition, consistent with itself, for any tokenizer."""

import pytest
import torch

from memory.schema import Event
from memory.stream_format import EventReading, event_tokens, stream_start, turn_prompt
from models import ByteTokenizer, Special
from models.tokenizer import decode
from tests.models.tiny_vocab import tiny_chatml_tokenizer

TOKENIZERS = {"bytes": ByteTokenizer(), "chatml": tiny_chatml_tokenizer()}


def chat_log(contents: list[bytes]) -> list[Event]:
    events, offset = [], 0
    for seq, content in enumerate(contents):
        events.append(Event(id=seq + 1, session_id=7, seq=seq, role=("user", "assistant")[seq % 2], content=content,
                            byte_offset=offset))
        offset += len(content)
    return events


@pytest.mark.parametrize("name", TOKENIZERS)
def test_a_turn_prompt_is_what_the_learner_reads_before_the_reply(name):
    tokenizer = TOKENIZERS[name]
    events = chat_log([b"first", b"reply", b"second"])
    prompt = turn_prompt(events, tokenizer, stream_starts=True)
    assert prompt[0] == stream_start(events[0], tokenizer) == tokenizer.chat.chat_start[0]
    assert prompt[1:] == [*(t for number, event in enumerate(events)
                            for t in event_tokens(event, tokenizer, starts_stream=number == 0)),
                          *tokenizer.chat.prefix("assistant")]
    assert turn_prompt(events[2:], tokenizer, stream_starts=False) == [
        *event_tokens(events[2], tokenizer), *tokenizer.chat.prefix("assistant")]
    # The whole stream start is read once, with the first event: seq 0, or the first left after a forget.
    assert event_tokens(events[0], tokenizer, starts_stream=True)[: len(tokenizer.chat.chat_start) - 1] == \
        list(tokenizer.chat.chat_start[1:])
    # After a forget took the first event, the next one starts the stream and reads the rest of its start.
    assert event_tokens(events[1], tokenizer, starts_stream=True)[: len(tokenizer.chat.chat_start) - 1] == \
        list(tokenizer.chat.chat_start[1:])
    assert turn_prompt(events[1:], tokenizer, stream_starts=True) == [
        tokenizer.chat.chat_start[0], *event_tokens(events[1], tokenizer, starts_stream=True),
        *event_tokens(events[2], tokenizer), *tokenizer.chat.prefix("assistant")]
    assert event_tokens(events[1], tokenizer)[-len(tokenizer.chat.turn_end):] == list(tokenizer.chat.turn_end)
    # A context that holds no replies reads the same stream without the assistant's turns.
    assert turn_prompt(events, tokenizer, stream_starts=True, replies=False) == [
        tokenizer.chat.chat_start[0], *event_tokens(events[0], tokenizer, starts_stream=True),
        *event_tokens(events[2], tokenizer), *tokenizer.chat.prefix("assistant")]


def test_byte_streams_keep_their_layout():
    first = Event(document_id=3, seq=0, role="document", content=b"abc", byte_offset=0)
    second = Event(document_id=3, seq=1, role="document", content=b"def", byte_offset=3)
    tokenizer = ByteTokenizer()
    assert stream_start(first, tokenizer) == Special.BEGIN
    assert event_tokens(first, tokenizer, starts_stream=True) == [int(Special.DOCUMENT), *b"abc"]
    assert event_tokens(second, tokenizer) == list(b"def")
    chat = chat_log([b"hi"])[0]
    assert event_tokens(chat, tokenizer, starts_stream=True) == [int(Special.USER), *b"hi", int(Special.END_OF_TURN)]


@pytest.mark.parametrize("name", TOKENIZERS)
def test_memory_spans_carry_the_exact_bytes_and_offsets_of_their_content(name):
    tokenizer = TOKENIZERS[name]
    events = chat_log([b"hi there", "g\u00e9n\u00e9ral kenobi".encode()])
    previous = EventReading.after(events[0], None, tokenizer)
    reading = EventReading.after(events[1], previous.tokens[-1], tokenizer)
    inputs = len(reading.tokens) - 1
    keys = torch.randn(inputs, 4)
    spans = reading.memory_spans(0, keys, keys, weight_version=2)
    text = b"".join(span.text for span in spans)
    assert text == events[1].content  # the template's tokens ("assistant\n") carry no content bytes
    assert spans[0].byte_start == events[1].byte_offset and spans[-1].byte_end == events[1].byte_offset + len(text)
    assert decode(tokenizer, reading.tokens).endswith(text + decode(tokenizer, tokenizer.chat.turn_end))


@pytest.mark.parametrize("name", TOKENIZERS)
def test_a_document_chunk_carries_the_previous_chunks_last_token_bytes(name):
    tokenizer = TOKENIZERS[name]
    first = Event(id=1, document_id=3, seq=0, role="document", content=b"abc xyz", byte_offset=0)
    second = Event(id=2, document_id=3, seq=1, role="document", content=b" def", byte_offset=7)
    previous = EventReading.after(first, None, tokenizer)
    carried = EventReading.after(second, previous.tokens[-1], tokenizer)
    last_bytes = tokenizer.token_bytes(previous.tokens[-1])
    assert last_bytes and b"abc xyz".endswith(last_bytes)
    assert carried.byte_starts[0] == second.byte_offset - len(last_bytes)
    assert carried.content(0, len(carried.tokens)) == last_bytes + b" def"


@pytest.mark.parametrize("name", TOKENIZERS)
def test_a_session_that_opens_with_a_system_turn_reads_it_instead_of_the_default_system_prompt(name):
    tokenizer = TOKENIZERS[name]
    system = Event(id=1, session_id=7, seq=0, role="system", content=b"the general", byte_offset=0)
    prompt = turn_prompt([system], tokenizer, stream_starts=True)
    own_turn = [*tokenizer.chat.prefix("system"), *tokenizer.encode(b"the general"), *tokenizer.chat.turn_end]
    if name == "chatml":  # its start is a default system turn ("Be brief."): replaced, read once, as the template
        assert prompt == [*own_turn, *tokenizer.chat.prefix("assistant")]
        assert b"Be brief." not in decode(tokenizer, prompt)
    else:  # a start that is not a system turn is kept, and the system turn follows it like any other
        assert prompt == [*tokenizer.chat.chat_start, *own_turn, *tokenizer.chat.prefix("assistant")]
    # What the learner reads of it is the same tokens.
    reading = EventReading.after(system, None, tokenizer)
    assert reading.tokens == prompt[: len(reading.tokens)]
    assert reading.content(0, len(reading.tokens)) == b"the general"
