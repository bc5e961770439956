"""What an agent paid to read each event before learning from it (its prequential score), oldest first."""

from __future__ import annotations

from fastapi import APIRouter, Query
from sqlalchemy import func, select

from agent.deps import CurrentKey, Db, PathId, QueryId, agent_for
from agent.pagination import MAX_LIMIT, keyset_page
from agent.schemas import Page, ScorePublic
from memory.schema import Event

router = APIRouter(prefix="/v1", tags=["learning"])


@router.get("/agents/{agent_id}/scores", response_model=Page[ScorePublic])
def list_scores(agent_id: PathId, db: Db, principal: CurrentKey, cursor: str | None = None,
                limit: int = Query(100, ge=1, le=MAX_LIMIT), document_id: QueryId = None) -> Page[ScorePublic]:
    """The learner records each event's bits before its update (learner.learn); unlearned events have none yet."""
    agent = agent_for(db, principal, agent_id)
    # Only the columns a score needs: an event's content may be megabytes, its length is enough.
    query = (select(Event.id, Event.session_id, Event.document_id, Event.role, func.length(Event.content).label("size"),
                    Event.learned_bits, Event.learned_at)
             # A forgotten event is out of the agent's history (learner.forget): its score goes with it.
             .where(Event.agent_id == agent.id, Event.learned_bits.is_not(None), Event.forgotten_at.is_(None)))
    if document_id is not None:
        query = query.where(Event.document_id == document_id)
    rows, next_cursor = keyset_page(db, query, Event.id, cursor=cursor, limit=limit)
    return Page(data=[ScorePublic(event_id=row.id, session_id=row.session_id, document_id=row.document_id,
                                  role=row.role, bytes=row.size, bits=row.learned_bits,
                                  bits_per_byte=row.learned_bits / max(row.size, 1), learned_at=row.learned_at)
                      for row in rows], next_cursor=next_cursor)
