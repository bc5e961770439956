"""Weight versions of an agent: list, roll back (a new version carrying an old one's weights)."""

from __future__ import annotations

from fastapi import APIRouter, Query
from sqlalchemy import select

from agent.deps import CurrentKey, Db, PathId, agent_for
from agent.errors import ApiError
from agent.pagination import MAX_LIMIT, keyset_page
from agent.schemas import Page, RollbackRequest, VersionPublic
from learner.versions import VersionNotFound, list_versions, rollback
from memory.db import lock_agent
from memory.schema import WeightVersion

router = APIRouter(prefix="/v1", tags=["weights"])


@router.get("/agents/{agent_id}/weights", response_model=Page[VersionPublic])
def list_weight_versions(agent_id: PathId, db: Db, principal: CurrentKey, cursor: str | None = None,
                         limit: int = Query(50, ge=1, le=MAX_LIMIT)) -> Page[VersionPublic]:
    """Kept versions, newest first (version 0, the base checkpoint, is implicit)."""
    agent = agent_for(db, principal, agent_id)
    rows, next_cursor = keyset_page(db, select(WeightVersion).where(WeightVersion.agent_id == agent.id),
                                    WeightVersion.version, cursor=cursor, limit=limit, newest_first=True)
    return Page(data=[VersionPublic.model_validate(row) for row in rows], next_cursor=next_cursor)


@router.post("/agents/{agent_id}/weights/rollback", response_model=VersionPublic)
def rollback_weights(agent_id: PathId, body: RollbackRequest, db: Db, principal: CurrentKey) -> VersionPublic:
    """Serving picks the new version up at its next request; learning continues from it."""
    agent = agent_for(db, principal, agent_id)
    lock_agent(db, agent.id)  # a learner publishing meanwhile would otherwise race for the same number
    try:
        version = rollback(db, agent_id=agent.id, to_version=body.version)
    except VersionNotFound as exc:
        raise ApiError(404, f"{exc}; list versions with GET /v1/agents/{agent_id}/weights") from None
    db.commit()
    return VersionPublic.model_validate(next(v for v in list_versions(db, agent.id) if v.version == version))
