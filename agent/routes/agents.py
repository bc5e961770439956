"""Agents (create: admin) and API keys (admin)."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from datetime import UTC, datetime

from fastapi import APIRouter, Query, Response
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from agent.auth import configured_admin_key_hash, issue_key
from agent.deps import AdminKey, CurrentKey, Db, PathId, ServicesDep, agent_for
from agent.errors import ApiError, not_found, unprocessable
from agent.pagination import MAX_LIMIT, keyset_page
from agent.schemas import AgentCreate, AgentPublic, KeyCreate, KeyCreated, KeyPublic, Page
from learner.base import check_base, is_imported, learning_config
from learner.learn import PENDING
from memory.admin import delete_agent as delete_agent_rows
from memory.db import lock_agent
from memory.schema import Agent, ApiKey, Event, Memory, WeightVersion

router = APIRouter(prefix="/v1", tags=["agents"])


def agents_public(db: Session, agents: Sequence[Agent]) -> list[AgentPublic]:
    """Agents with their figures: four grouped queries for a whole page, not four per agent."""
    ids = [agent.id for agent in agents]

    versions = dict(db.execute(select(WeightVersion.agent_id, func.max(WeightVersion.version))
                               .where(WeightVersion.agent_id.in_(ids)).group_by(WeightVersion.agent_id)).all())
    memories = dict(db.execute(select(Memory.agent_id, func.count()).where(Memory.agent_id.in_(ids))
                               .group_by(Memory.agent_id)).all())
    learned = dict(db.execute(select(Event.agent_id, func.sum(func.length(Event.content)))
                              .where(Event.agent_id.in_(ids), Event.learned_at.is_not(None))
                              .group_by(Event.agent_id)).all())
    pending = dict(db.execute(select(Event.agent_id, func.count())
                              .where(Event.agent_id.in_(ids), *PENDING)
                              .group_by(Event.agent_id)).all())
    return [AgentPublic(
        id=agent.id, name=agent.name, base_checkpoint=agent.base_checkpoint, learning=agent.learning_settings or {},
        created_at=agent.created_at, weight_version=versions.get(agent.id) or 0,
        memory_count=memories.get(agent.id, 0), bytes_learned=learned.get(agent.id) or 0,
        queue_lag=pending.get(agent.id, 0),
    ) for agent in agents]


def agent_public(db: Session, agent: Agent) -> AgentPublic:
    return agents_public(db, [agent])[0]


@router.post("/agents", status_code=201, response_model=AgentPublic)
def create_agent(body: AgentCreate, db: Db, services: ServicesDep, _: AdminKey) -> AgentPublic:
    base = body.base_checkpoint or services.default_base
    with unprocessable("base_checkpoint: "):
        check_base(base)
    try:
        learning_config(body.learning, imported=is_imported(base))
    except (ValueError, TypeError) as exc:  # TypeError: a setting of the wrong type
        raise ApiError(422, f"learning: {exc}") from None
    agent = Agent(name=body.name, base_checkpoint=base, learning_settings=body.learning or {})
    db.add(agent)
    try:
        db.commit()
    except IntegrityError:
        raise ApiError(409, f"an agent named {body.name!r} exists; choose another name") from None
    return agent_public(db, agent)


@router.get("/agents", response_model=Page[AgentPublic])
def list_agents(db: Db, principal: CurrentKey, cursor: str | None = None,
                limit: int = Query(50, ge=1, le=MAX_LIMIT)) -> Page[AgentPublic]:
    query = select(Agent) if principal.is_admin else select(Agent).where(Agent.id == principal.agent_id)
    rows, next_cursor = keyset_page(db, query, Agent.id, cursor=cursor, limit=limit)
    return Page(data=agents_public(db, rows), next_cursor=next_cursor)


@router.get("/agents/{agent_id}", response_model=AgentPublic)
def get_agent(agent_id: PathId, db: Db, principal: CurrentKey) -> AgentPublic:
    return agent_public(db, agent_for(db, principal, agent_id))


@router.delete("/agents/{agent_id}", status_code=204)
def delete_agent(agent_id: PathId, db: Db, services: ServicesDep, principal: AdminKey) -> Response:
    agent = agent_for(db, principal, agent_id)
    delete_agent_rows(db, agent_id=agent.id)
    db.commit()
    services.runtimes.drop(agent_id)
    # Files kept per agent go with it: a later agent must never open this one's index snapshot.
    shutil.rmtree(services.settings.snapshot_dir(agent_id), ignore_errors=True)
    return Response(status_code=204)


@router.post("/keys", status_code=201, response_model=KeyCreated)
def create_key(body: KeyCreate, db: Db, principal: AdminKey) -> KeyCreated:
    if body.agent_id is not None:
        agent_for(db, principal, body.agent_id)
        lock_agent(db, body.agent_id)  # not deleted before the key's row references it
    row, key = issue_key(db, agent_id=body.agent_id, name=body.name)
    db.commit()
    return KeyCreated(id=row.id, key=key, agent_id=row.agent_id, name=row.name)


@router.get("/keys", response_model=Page[KeyPublic])
def list_keys(db: Db, _: AdminKey, cursor: str | None = None,
              limit: int = Query(50, ge=1, le=MAX_LIMIT)) -> Page[KeyPublic]:
    rows, next_cursor = keyset_page(db, select(ApiKey), ApiKey.id, cursor=cursor, limit=limit)
    return Page(data=[KeyPublic(id=k.id, agent_id=k.agent_id, name=k.name, created_at=k.created_at,
                                revoked_at=k.revoked_at) for k in rows], next_cursor=next_cursor)


@router.delete("/keys/{key_id}", status_code=204)
def revoke_key(key_id: PathId, db: Db, services: ServicesDep, _: AdminKey) -> Response:
    """The server's configured admin key cannot be revoked (409): the operator would be locked out."""
    row = db.get(ApiKey, key_id)
    if row is None:
        raise not_found(f"key {key_id}")
    if row.key_hash == configured_admin_key_hash(services.settings):
        raise ApiError(409, "this is the server's configured admin key (LIFELONG_ADMIN_KEY or data_dir/admin.key); "
                       "change it there and restart instead of revoking it")
    if row.revoked_at is None:
        row.revoked_at = datetime.now(UTC)
        db.commit()
    return Response(status_code=204)
