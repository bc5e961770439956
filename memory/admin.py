"""Inspection and curation of one agent's memories: plain keyword-only functions over a DB session.

The admin API exposes these; none of them knows HTTP.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Iterator
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import Select, delete, func, select
from sqlalchemy.orm import Session

from memory.db import lock_agent
from memory.pair_format import FP16, PairFormat
from memory.schema import MAX_ID, Agent, Memory
from memory.store import MemoryStore, Span, delete_memory_rows

EXPORT_FORMAT = 1


def stored_tokens(db: Session, *, agent_id: int) -> int:
    """How many (key, value) pairs the agent's memory holds in SQL."""
    return db.scalar(select(func.coalesce(func.sum(Memory.num_tokens), 0)).where(Memory.agent_id == agent_id))


def memories_query(
    *,
    agent_id: int,
    event_id: int | None = None,
    document_id: int | None = None,
    session_id: int | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    text_contains: str | None = None,
) -> Select[tuple[Memory]]:
    """The agent's memories filtered by source, time range and text; the caller orders and pages it."""
    query = select(Memory).where(Memory.agent_id == agent_id)
    for column, value in (
        (Memory.event_id, event_id),
        (Memory.document_id, document_id),
        (Memory.session_id, session_id),
    ):
        if value is not None:
            query = query.where(column == value)
    if created_after is not None:
        query = query.where(Memory.created_at >= created_after)
    if created_before is not None:
        query = query.where(Memory.created_at < created_before)
    if text_contains:
        query = query.where(Memory.text.contains(text_contains, autoescape=True))
    return query


def get_memory(db: Session, *, agent_id: int, memory_id: int) -> Memory | None:
    """One memory with its provenance and hit statistics; None if this agent has no such memory."""
    return db.scalar(select(Memory).where(Memory.agent_id == agent_id, Memory.id == memory_id))


def delete_memories(
    db: Session,
    *,
    agent_id: int,
    memory_id: int | None = None,
    event_id: int | None = None,
    document_id: int | None = None,
    session_id: int | None = None,
    everything: bool = False,
) -> int:
    """Delete one memory, all from one source (event, document or session), or all of an agent's; returns the count."""
    chosen = [x is not None for x in (memory_id, event_id, document_id, session_id)].count(True) + int(everything)
    if chosen != 1:
        raise ValueError("name exactly one of memory_id, event_id, document_id, session_id or everything=True")
    query = select(Memory.id).where(Memory.agent_id == agent_id)
    if memory_id is not None:
        query = query.where(Memory.id == memory_id)
    elif event_id is not None:
        query = query.where(Memory.event_id == event_id)
    elif document_id is not None:
        query = query.where(Memory.document_id == document_id)
    elif session_id is not None:
        query = query.where(Memory.session_id == session_id)
    return len(delete_memory_rows(db, agent_id=agent_id, memory_ids=list(db.scalars(query))))


def delete_agent(db: Session, *, agent_id: int) -> None:
    """Delete the agent and every row it owns in the caller's transaction; AgentGone if it is not there.

    Its lock comes first and exclusive (`memory.db.lock_agent`): a learner, replay or chat turn committing
    now finishes first, and those after find the agent gone. Taking its memory rows first instead
    deadlocked with a learner that held the agent's lock and was adding hits to those rows."""
    lock_agent(db, agent_id, exclusive=True)
    delete_memories(db, agent_id=agent_id, everything=True)  # tombstones: every process's index drops them
    db.execute(delete(Agent).where(Agent.id == agent_id))  # the rest goes by ON DELETE CASCADE


def export_ndjson(db: Session, *, agent_id: int) -> Iterator[str]:
    """One JSON line per memory, pairs included (base64, in the row's `pair_format`), oldest first; streams from
    the DB."""
    rows = db.scalars(
        select(Memory).where(Memory.agent_id == agent_id).order_by(Memory.id).execution_options(yield_per=100)
    )
    for row in rows:
        yield json.dumps(
            {
                "format": EXPORT_FORMAT,
                "agent_id": row.agent_id,
                "memory_id": row.id,
                "byte_start": row.byte_start,
                "byte_end": row.byte_end,
                "text": row.text,
                "num_tokens": row.num_tokens,
                "head_dim": row.head_dim,
                "token_start": row.token_start,
                "weight_version": row.weight_version,
                "created_at": row.created_at.isoformat(),
                "imported_from": row.imported_from,
                "pair_format": row.pair_format or FP16,
                "keys": base64.b64encode(row.keys).decode(),
                "values": base64.b64encode(row.values).decode(),
            }
        )


def import_ndjson(db: Session, *, store: MemoryStore, lines: Iterable[str | bytes]) -> int:
    """Add exported memories to `store`'s agent in the caller's transaction; returns how many.

    The whole import is validated line by line; the first bad line raises ValueError
    naming it, and the caller's rollback then leaves nothing half-imported.
    """
    spans = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        spans.append(span_from_line(line, number, store))
    store.add_spans(spans, db=db)
    return len(spans)


class ExportLine(BaseModel):
    """One exported memory, as `export_ndjson` writes it; an import line must be one (types checked)."""

    model_config = ConfigDict(strict=True)

    format: int
    agent_id: int
    memory_id: int
    byte_start: int = Field(ge=0, le=MAX_ID)
    byte_end: int = Field(ge=0, le=MAX_ID)
    text: str
    num_tokens: int = Field(ge=1)
    head_dim: int
    weight_version: int = Field(ge=0, le=MAX_ID)
    imported_from: str | None = Field(None, max_length=200, pattern=r"^[^\x00]*$")  # a SQL text column
    pair_format: str = Field(FP16, max_length=200)  # exports from before formats hold fp16 pairs
    keys: str
    values: str


def span_from_line(line: str | bytes, number: int, store: MemoryStore) -> Span:
    head_dim = store.head_dim
    try:
        raw = json.loads(line)
        if not isinstance(raw, dict) or raw.get("format") != EXPORT_FORMAT:
            found = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
            raise ValueError(f"not a memory of export format {EXPORT_FORMAT} (found {found!r})")
        item = ExportLine.model_validate(raw)
        if item.head_dim != head_dim:
            raise ValueError(f"head_dim {item.head_dim} does not match this agent's {head_dim}")
        keys = base64.b64decode(item.keys, validate=True)
        values = base64.b64decode(item.values, validate=True)
        pair_format = PairFormat.parse(item.pair_format)
        try:
            pair_format.decode(keys, values, tokens=item.num_tokens, channels=store.channels,
                                                      head_dim=head_dim)
        except ValueError as exc:
            raise ValueError(f"keys, values and num_tokens disagree (this agent stores {store.channels} pairs per "
                             f"token): {exc}") from None
        encoded = store.encoded(keys, values, item.pair_format, item.num_tokens)
        if encoded is None:
            raise ValueError(f"these memories keep {item.pair_format}; this agent's store needs "
                             f"{store.pair_format.name} (its memory layers attend to stored pairs)")
        return Span(
            keys=None,
            values=None,
            encoded=encoded,
            tokens=item.num_tokens,
            text=item.text.encode("utf-8", errors="replace"),
            byte_start=item.byte_start,
            byte_end=item.byte_end,
            weight_version=item.weight_version,
            imported_from=item.imported_from or f"agent {item.agent_id} memory {item.memory_id}",
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, error['loc']))}: {error['msg']}" for error in exc.errors())
        raise ValueError(f"import line {number}: {problems}") from None
    except RecursionError:
        raise ValueError(f"import line {number}: JSON nested too deeply") from None
    except (ValueError, binascii.Error) as exc:  # not JSON, not base64, shapes that disagree
        raise ValueError(f"import line {number}: {exc}") from None
