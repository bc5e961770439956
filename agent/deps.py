"""FastAPI dependencies: the process's services, a DB session, the caller's key, scoped lookups."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, defer

from agent.auth import Principal, lookup
from agent.errors import ApiError, not_found
from agent.schemas import MAX_ID
from agent.services import Services
from memory.schema import Agent, Document, StreamSession

_bearer = HTTPBearer(auto_error=False, description="an API key: admin, or scoped to one agent")


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_db(services: ServicesDep) -> Iterator[Session]:
    with services.sessions() as db:
        yield db


Db = Annotated[Session, Depends(get_db)]


def authenticate(services: ServicesDep,
                 credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Principal:
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise ApiError(401, "send an API key as 'Authorization: Bearer <key>'", headers=challenge)
    with services.sessions() as db:
        principal = lookup(db, credentials.credentials)
    if principal is None:
        raise ApiError(401, "this API key is not valid (wrong, or revoked)", headers=challenge)
    return principal


CurrentKey = Annotated[Principal, Depends(authenticate)]


def require_admin(principal: CurrentKey) -> Principal:
    if not principal.is_admin:
        raise ApiError(403, "this needs an admin key; agent keys only touch their own agent")
    return principal


AdminKey = Annotated[Principal, Depends(require_admin)]


def agent_for(db: Session, principal: Principal, agent_id: int) -> Agent:
    agent = db.get(Agent, agent_id)
    if agent is None or not principal.can_access(agent.id):
        raise not_found(f"agent {agent_id}")
    return agent


def session_for(db: Session, principal: Principal, session_id: int) -> StreamSession:
    # The state blobs (megabytes for larger models) are read only where a turn needs them.
    session = db.get(StreamSession, session_id, options=[defer(StreamSession.state), defer(StreamSession.learn_state)])
    if session is None or not principal.can_access(session.agent_id):
        raise not_found(f"session {session_id}")
    return session


def document_for(db: Session, principal: Principal, document_id: int) -> Document:
    document = db.get(Document, document_id)
    if document is None or not principal.can_access(document.agent_id):
        raise not_found(f"document {document_id}")
    return document


# -- bounded numbers: every id the API takes is a positive 63-bit integer (SQL's BIGINT), checked
# before SQL sees it (SQLite raised OverflowError for 2**64, a 500).

_ID = {"ge": 1, "le": MAX_ID}
PathId = Annotated[int, Path(description="a positive 63-bit id", **_ID)]
QueryId = Annotated[int | None, Query(description="a positive 63-bit id", **_ID)]
