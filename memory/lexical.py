"""Lexical search over the memories' text, in the database that holds them (no other service).

SQLite: an FTS5 index kept by triggers on `memories` (migration 0008), ranked by its BM25. PostgreSQL: a GIN
index on the text's `english` words; its full-text ranking has no inverse document frequency (a name said
in every turn would weigh what a rare word weighs), so each matched word counts its own IDF among the agent's
memories, as BM25 does, divided by the memory's length in tokens relative to the average (BM25's length norm,
b=0.75; a word's repeats within a memory are not counted). A deleted memory leaves both indexes with its row,
in the same transaction.

Any word of the query may match (OR): a question shares only some of its words with the memory that answers
it. Words that say nothing of what is asked (English function words) are left out of the query.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Integer, and_, cast, column, func, literal_column, or_, select, table
from sqlalchemy.orm import Session

from memory.schema import Event, Memory

# Words left out of a query: they match nearly every memory and say nothing of what is asked.
STOP_WORDS = frozenset({
    "a", "about", "after", "all", "also", "am", "an", "and", "any", "are", "as", "at", "be", "been", "before",
    "but", "by", "can", "could", "did", "do", "does", "doing", "for", "from", "had", "has", "have", "he", "her",
    "here", "him", "his", "how", "i", "if", "in", "into", "is", "it", "its", "just", "me", "my", "of", "on",
    "or", "our", "she", "so", "some", "than", "that", "the", "their", "them", "then", "there", "these", "they",
    "this", "to", "too", "up", "us", "was", "we", "were", "what", "when", "where", "which", "who", "whom",
    "why", "will", "with", "would", "you", "your",
})
# The most words a query keeps (a pasted page would otherwise make a query of thousands).
MAX_QUERY_WORDS = 32
BM25_B = 0.75
ENGLISH = literal_column("'english'")  # a constant, as migration 0008's index expression has it
_WORD = re.compile(r"[^\W_]+")
FTS = table("memories_fts", column("rowid"))  # migration 0008's FTS5 table (SQLite)


@dataclass(frozen=True)
class LexicalHit:
    memory_id: int
    score: float  # higher is better; BM25 on SQLite, IDF-weighted matches on PostgreSQL


def query_words(text_: str) -> list[str]:
    """The words of `text_` a lexical query looks for: lower-cased, function words and single characters out (the
    "s" of "what's" matched every "that's"), each once, in order."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(text_.lower()):
        if len(word) > 1 and word not in STOP_WORDS and word not in seen:
            seen[word] = None
    return list(seen)[:MAX_QUERY_WORDS]


def told(memory_event_role: ColumnElement, memory_text: ColumnElement) -> ColumnElement[bool]:
    """Whether a memory holds something the agent was told: a document's, an imported one, or a user's turn
    that is not a question; not the agent's own reply, nor what it was asked."""
    question = and_(memory_event_role == "user", func.rtrim(memory_text, " \t\r\n").like("%?"))
    return or_(memory_event_role.is_(None), and_(memory_event_role != "assistant", ~question))


def lexical_search(db: Session, *, agent_id: int, text_: str, limit: int, told_only: bool = False) -> list[LexicalHit]:
    """The agent's memories best matching `text_`'s words, best first; [] when it has none worth looking for.
    `told_only`: only those holding what it was told (`told`)."""
    words = query_words(text_)
    if not words or limit <= 0:
        return []
    if db.get_bind().dialect.name == "sqlite":
        return _sqlite(db, agent_id, words, limit, told_only)
    return _postgresql(db, agent_id, words, limit, told_only)


def _sqlite(db: Session, agent_id: int, words: list[str], limit: int, told_only: bool) -> list[LexicalHit]:
    match = " OR ".join(f'"{word}"' for word in words)  # quoted: a word is never read as FTS5 syntax
    rank = func.bm25(literal_column("memories_fts")).label("rank")
    query = (select(Memory.id, rank).select_from(FTS).join(Memory, Memory.id == FTS.c.rowid)
             .where(literal_column("memories_fts").op("MATCH")(match), Memory.agent_id == agent_id))
    if told_only:
        query = query.outerjoin(Event, Event.id == Memory.event_id).where(told(Event.role, Memory.text))
    rows = db.execute(query.order_by(rank).limit(limit)).all()
    return [LexicalHit(memory_id=row.id, score=-row.rank) for row in rows]  # FTS5's bm25 is lower-is-better


def _postgresql(db: Session, agent_id: int, words: list[str], limit: int, told_only: bool) -> list[LexicalHit]:
    vector = func.to_tsvector(ENGLISH, Memory.text)  # as the index spells it, or the index is not used
    queries = [func.plainto_tsquery(ENGLISH, word) for word in words]
    mine = Memory.agent_id == agent_id
    total, average = db.execute(select(func.count(), func.avg(Memory.num_tokens)).where(mine)).one()
    if not total:
        return []
    # Each word's document frequency through the index (one count each: a handful of words per query).
    idf = [math.log(1 + (total - n + 0.5) / (n + 0.5)) if n else 0.0
           for n in (db.scalar(select(func.count()).where(mine, vector.op("@@")(q))) for q in queries)]
    weighted = [(q, w) for q, w in zip(queries, idf) if w > 0]
    if not weighted:
        return []
    any_word = func.to_tsquery(ENGLISH, " | ".join(f"'{word}'" for word in words))
    found = select(Memory.id, Memory.num_tokens, vector.label("words")).where(mine, vector.op("@@")(any_word))
    if told_only:
        found = found.outerjoin(Event, Event.id == Memory.event_id).where(told(Event.role, Memory.text))
    found = found.subquery()  # each candidate's words computed once
    matched = sum(cast(found.c.words.op("@@")(q), Integer) * w for q, w in weighted)
    score = (matched / (1 - BM25_B + BM25_B * found.c.num_tokens / float(average))).label("score")
    rows = db.execute(select(found.c.id, score).order_by(score.desc(), found.c.id).limit(limit)).all()
    return [LexicalHit(memory_id=row.id, score=float(row.score)) for row in rows]
