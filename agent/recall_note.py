"""Recall in context: before an imported chat model answers, what its memory layers recall for the
message is read into its context as a short note at the start of the message, where the model reads
it as it reads any text.

Measured (BENCHMARKS.md, "Recall through chat"): SmolLM2-135M answers 9 of 10 stated facts when the
statement is in its context, but seldom when its memory layers attend to the stored pairs among
other documents' pairs; the same layers' search ranks the statement's memory first most of the
time. So the search picks, and the context reads. Where the note goes was measured too (13 questions
about stated facts, SmolLM2, greedy): at the start of the user's message 11 answered, as a system turn
before it 10, with other wordings of that turn 7-9. The note is not logged: the turn's state is
re-read without it, so the session state stays exactly what its event log says.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from memory.admin import recall
from memory.schema import Event, Memory
from memory.store import MemoryStore
from models import State
from models.tokenizer import Tokenizer
from models.transformer import TransformerLM

NOTE_HEADER = "From your memory: "
RECALL_CANDIDATES = 8
# The end of a message is what it asks: recall reads at most this much of it (a 64 KB message would
# otherwise cost a search per token of all of it before the first byte of the answer).
RECALL_QUERY_BYTES = 2048


def recalled_note(db: Session, *, store: MemoryStore, model: TransformerLM, session_id: int, state: State | None,
                  message: bytes, min_score: float, max_bytes: int) -> list[int]:
    """The tokens of a note of the memories recalled for `message` with at least `min_score`, best first, up
    to `max_bytes` of their text; [] when none qualifies. The session's own memories that its state still
    holds in its window are left out (the model sees those already)."""
    if not model.config.memory_layers or max_bytes <= 0 or not message.strip():
        return []
    query = message[-RECALL_QUERY_BYTES:].decode("utf-8", errors="ignore").encode()  # whole characters only
    if not query.strip():
        return []
    hits = [hit for hit in recall(db, store=store, model=model, text=query, limit=RECALL_CANDIDATES)
            if hit.score >= min_score]
    if not hits:
        return []
    window_start = (state.position if state is not None else 0) - model.config.context_tokens
    places = select(Memory.id, Memory.session_id, Memory.token_start, Memory.num_tokens)
    rows = {row.id: row for row in db.execute(places.where(Memory.id.in_([hit.memory_id for hit in hits])))}
    texts, used = [], 0
    for hit in hits:
        row = rows.get(hit.memory_id)
        if row is None or (row.session_id == session_id and row.token_start is not None
                           and row.token_start + row.num_tokens > window_start):
            continue
        text = hit.text.strip()
        if not text or used + len(text.encode()) > max_bytes:
            continue
        texts.append(text)
        used += len(text.encode())
    if not texts:
        return []
    try:
        return model.tokenizer.encode((NOTE_HEADER + "\n".join(texts) + "\n\n").encode())
    except ValueError:  # a memory's shown text (U+FFFD for bytes it could not show) the vocabulary cannot spell
        return []


def with_note(prompt: list[int], note: list[int], message: Event, tokenizer: Tokenizer) -> list[int]:
    """`prompt` (turn_prompt's) with `note` read at the start of its last message, after the role prefix."""
    if not note:
        return prompt
    tail = (len(tokenizer.encode(message.content)) + len(tokenizer.chat.turn_end)
            + len(tokenizer.chat.prefix("assistant")))
    return [*prompt[: len(prompt) - tail], *note, *prompt[len(prompt) - tail :]]
