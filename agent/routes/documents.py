"""Documents: a streamed body logged durably as it arrives (202), then learned by the workers."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import select
from starlette.requests import ClientDisconnect

from agent.deps import CurrentKey, Db, PathId, ServicesDep, agent_for, document_for
from agent.documents import is_ndjson, ndjson_pieces
from agent.errors import ApiError
from agent.pagination import MAX_LIMIT, keyset_page
from agent.schemas import NO_NUL, DocumentPublic, Page
from memory.db import AgentGone
from memory.schema import Document
from workers.submit import DocumentUpload

router = APIRouter(prefix="/v1", tags=["documents"])


def document_public(document: Document) -> DocumentPublic:
    return DocumentPublic(id=document.id, agent_id=document.agent_id, name=document.name,
                          content_type=document.content_type, status=document.status,
                          bytes_received=document.bytes_received, bytes_learned=document.bytes_processed,
                          failed_reason=document.failed_reason, created_at=document.created_at,
                          updated_at=document.updated_at)


def _agent_id(services, principal, agent_id: int) -> int:
    with services.sessions() as db:
        return agent_for(db, principal, agent_id).id


@router.post("/agents/{agent_id}/documents", status_code=202, response_model=DocumentPublic,
             openapi_extra={"requestBody": {"content": {"text/plain": {}, "application/x-ndjson": {}},
                                            "required": True}})
async def upload_document(
    agent_id: PathId, request: Request, services: ServicesDep, principal: CurrentKey,
    name: str = Query("", max_length=500, pattern=NO_NUL, description="no NUL (SQL text cannot hold it)"),
) -> JSONResponse:
    """The body is read as it arrives, never whole: bytes exactly as sent (text/plain, or any type but
    NDJSON), or the text of each `{"text": ...}` line (application/x-ndjson)."""
    agent_id = await run_in_threadpool(_agent_id, services, principal, agent_id)
    content_type = request.headers.get("content-type", "text/plain")
    upload = DocumentUpload(services.celery, services.sessions, agent_id=agent_id, name=name,
                            content_type=content_type.split(";")[0].strip()[:100],
                            chunk_bytes=services.settings.chunk_bytes)
    pieces = ndjson_pieces(request.stream()) if is_ndjson(content_type) else request.stream()
    try:
        async for piece in pieces:
            if piece:
                await run_in_threadpool(upload.write, piece)
                services.metrics.document_bytes.inc(len(piece))
        document_id = await run_in_threadpool(upload.finish)
    except ValueError as exc:  # nothing arrived
        raise ApiError(422, str(exc)) from None
    except (ApiError, ClientDisconnect) as exc:
        reason = exc.detail if isinstance(exc, ApiError) else "the client disconnected mid-upload"
        await run_in_threadpool(upload.fail, f"upload stopped after {upload.bytes_written:,} bytes: {reason}")
        raise
    with services.sessions() as db:
        document = db.get(Document, document_id)
        if document is None:  # its agent was deleted as the upload ended
            raise AgentGone(f"agent {agent_id} was deleted during the upload")
        return JSONResponse(document_public(document).model_dump(mode="json"), status_code=202)


@router.get("/documents/{document_id}", response_model=DocumentPublic)
def get_document(document_id: PathId, db: Db, principal: CurrentKey) -> DocumentPublic:
    return document_public(document_for(db, principal, document_id))


@router.get("/agents/{agent_id}/documents", response_model=Page[DocumentPublic])
def list_documents(agent_id: PathId, db: Db, principal: CurrentKey, cursor: str | None = None,
                   limit: int = Query(50, ge=1, le=MAX_LIMIT)) -> Page[DocumentPublic]:
    """Newest first, failed ones included (with their reason)."""
    agent = agent_for(db, principal, agent_id)
    rows, next_cursor = keyset_page(db, select(Document).where(Document.agent_id == agent.id), Document.id,
                                    cursor=cursor, limit=limit, newest_first=True)
    return Page(data=[document_public(row) for row in rows], next_cursor=next_cursor)
