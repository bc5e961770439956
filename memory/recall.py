"""Recall: the memories that answer a text, found two ways and fused into one ranking.

- The model's own search: the memory layers (or retrieval block) read the text and weigh stored pairs; a
  memory's score is its best pair's share of a head's attention (or its key's cosine with a query).
- The words: the database's full-text index over the memories' text (`memory.lexical`).
They fail differently. The model's keys rank by what a layer attends to, which for a question is often the
memory that sounds like it (another question, a turn of the same speaker); the words find the memory that
names what is asked, but not a paraphrase. Fused by weighted reciprocal rank (a list's rank r adds
weight / (FUSION_K + r); Cormack et al. 2009): no score scale to calibrate between two signals that share none,
and a memory both find comes first. The measurements: BENCHMARKS.md, "Memory that finds what matters (LoCoMo)".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sqlalchemy import select
from sqlalchemy.orm import Session

from memory.ids import split_ids
from memory.lexical import lexical_search, told
from memory.schema import Event, Memory
from memory.store import MemoryStore, memory_for
from models import LanguageModel, State

# Reciprocal rank fusion's constant and each signal's weight: the model's search is worth a quarter of the words'
# (its rank r adds MODEL_WEIGHT / (FUSION_K + r)), so that it orders what the words found and brings in what
# they missed; at equal weights it pushed the evidence out of LoCoMo's top 5 (BENCHMARKS.md, LoCoMo).
FUSION_K = 10
MODEL_WEIGHT = 0.25
# Candidates each signal offers the fusion, at least (a memory ranked lower by both adds nothing).
CANDIDATES = 20
# With `told_only`, the model's search offers this many times as many, before the agent's replies and the
# questions it was asked are left out (in a chat-heavy memory they are most of what it weighs for a question).
TOLD_OVERFETCH = 4


@dataclass(frozen=True)
class RecallHit:
    memory_id: int
    score: float  # the fused rank's score: sum over the signals that found it of weight / (FUSION_K + its rank)
    # The model's search: its best pair's largest share of a head's attention (memory layers), or its key's
    # cosine with a query / its run's mean (a retrieval block); None when the search did not rank it.
    model_score: float | None
    token_hits: int  # (position, pair) weighings by the retrieval layer that fell in this memory, found or followed
    lexical_score: float | None  # the words' BM25 (memory.lexical); None when no word of the text matched it
    text: str
    # Provenance: the event it was read from, and that event's document or chat session.
    event_id: int | None
    document_id: int | None
    session_id: int | None


def recall(db: Session, *, store: MemoryStore, model: LanguageModel, text: str | bytes, state: State | None = None,
           limit: int = 20, lexical: bool = True, tokens: list[int] | None = None,
           told_only: bool = False) -> list[RecallHit]:
    """The memories that answer `text` (read from `state`, or a fresh stream), best first: the model's search
    and (with `lexical`) the words' fused. `tokens`: the text's, when the caller has them. `told_only`: only
    memories of what the agent was told (`memory.lexical.told`): its replies and the questions it was asked
    would otherwise take the places of what answers. It searches the store as this process holds it:
    `store.catch_up()` first to see what others wrote since."""
    data = text.encode() if isinstance(text, str) else text
    if not data:
        raise ValueError("recall needs a non-empty text")
    candidates = max(limit, CANDIDATES)
    searched = model_search(store=store, model=model, tokens=model.tokenizer.encode(data) if tokens is None
                            else tokens, state=state, limit=candidates * (TOLD_OVERFETCH if told_only else 1))
    if told_only:
        kept = set(db.scalars(select(Memory.id).outerjoin(Event, Event.id == Memory.event_id)
                              .where(Memory.id.in_(list(searched)), told(Event.role, Memory.text))))
        searched = {memory_id: found for memory_id, found in searched.items() if memory_id in kept}
    words = lexical_search(db, agent_id=store.agent_id, text_=data.decode("utf-8", errors="ignore"),
                           limit=candidates, told_only=told_only) if lexical else []
    fused: dict[int, float] = {}
    for weight, ranked in ((MODEL_WEIGHT, list(searched)), (1.0, [hit.memory_id for hit in words])):
        for rank, memory_id in enumerate(ranked):
            fused[memory_id] = fused.get(memory_id, 0.0) + weight / (FUSION_K + rank + 1)
    order = sorted(fused, key=lambda memory_id: -fused[memory_id])[:limit]  # stable: the model's first on a tie
    lexical_of = {hit.memory_id: hit.score for hit in words}
    found = {row.id: row for row in db.execute(
        select(Memory.id, Memory.text, Memory.event_id, Memory.document_id, Memory.session_id)
        .where(Memory.agent_id == store.agent_id, Memory.id.in_(order)))}
    return [RecallHit(memory_id=i, score=fused[i], model_score=searched[i][0] if i in searched else None,
                      token_hits=searched[i][1] if i in searched else 0, lexical_score=lexical_of.get(i),
                      text=found[i].text, event_id=found[i].event_id, document_id=found[i].document_id,
                      session_id=found[i].session_id)
            for i in order if i in found]


@torch.inference_mode()
def model_search(*, store: MemoryStore, model: LanguageModel, tokens: list[int], state: State | None,
                 limit: int) -> dict[int, tuple[float, int]]:
    """Memory id -> (best score, weighings) of the memories the model weighs while reading `tokens`, best first."""
    if model.retrieval_block is None and not getattr(model.config, "memory_layers", ()):
        raise ValueError("this model has no retrieval block or memory layer, so it recalls nothing")
    read = torch.tensor([tokens], device=model.device)
    ids, scores = model.recall_scores(read, memory_for(model, store, None), state)
    weighed = ids >= 0
    rows, _ = split_ids(ids[weighed].cpu().numpy())
    row_scores = scores[weighed].cpu().numpy()
    # Per row, its best score and how many (query, pair) scores it got: tens of thousands per question.
    order = np.argsort(rows, kind="stable")
    unique_rows, starts, hits = np.unique(rows[order], return_index=True, return_counts=True)
    best = np.maximum.reduceat(row_scores[order], starts) if len(rows) else row_scores
    ranked_at = np.argsort(-best, kind="stable")[:limit]
    return {int(unique_rows[i]): (float(best[i]), int(hits[i])) for i in ranked_at}
