"""Memories of an agent: list, inspect, what would be recalled, delete, export and import (NDJSON)."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlalchemy import select

from agent.deps import CurrentKey, Db, PathId, QueryId, ServicesDep, agent_for
from agent.documents import ndjson_lines
from agent.errors import ApiError, not_found, unprocessable
from agent.pagination import MAX_LIMIT, keyset_page
from agent.schemas import (
    NO_NUL,
    Deleted,
    ForgetJobPublic,
    Imported,
    MemoryPublic,
    Page,
    RecallHitPublic,
    RecallRequest,
)
from memory.admin import delete_memories, export_ndjson, get_memory, memories_query, span_from_line
from memory.schema import ForgetJob, Memory
from workers.submit import forget_memories

router = APIRouter(prefix="/v1", tags=["memories"])
# An exported memory's line holds its pairs for every memory layer (base64 fp16): megabytes for a long span.
MAX_IMPORT_LINE = 64 << 20


@router.get("/agents/{agent_id}/memories", response_model=Page[MemoryPublic])
def list_agent_memories(agent_id: PathId, db: Db, principal: CurrentKey, cursor: str | None = None,
                        limit: int = Query(50, ge=1, le=MAX_LIMIT), document_id: QueryId = None,
                        session_id: QueryId = None, event_id: QueryId = None,
                        text: str | None = Query(None, max_length=1000, pattern=NO_NUL,
                                                 description="only memories whose text contains this")):
    """Newest first."""
    agent = agent_for(db, principal, agent_id)
    query = memories_query(agent_id=agent.id, event_id=event_id, document_id=document_id, session_id=session_id,
                           text_contains=text)
    rows, next_cursor = keyset_page(db, query, Memory.id, cursor=cursor, limit=limit, newest_first=True)
    return Page(data=[MemoryPublic.model_validate(row) for row in rows], next_cursor=next_cursor)


def _memory_agent(db, principal, memory_id: int) -> int:
    agent_id = db.scalar(select(Memory.agent_id).where(Memory.id == memory_id))
    if agent_id is None or not principal.can_access(agent_id):
        raise not_found(f"memory {memory_id}")
    return agent_id


@router.get("/memories/{memory_id}", response_model=MemoryPublic)
def get_one_memory(memory_id: PathId, db: Db, principal: CurrentKey) -> MemoryPublic:
    return MemoryPublic.model_validate(get_memory(db, agent_id=_memory_agent(db, principal, memory_id),
                                                  memory_id=memory_id))


@router.delete("/memories/{memory_id}", status_code=204)
def delete_one_memory(memory_id: PathId, db: Db, principal: CurrentKey) -> Response:
    delete_memories(db, agent_id=_memory_agent(db, principal, memory_id), memory_id=memory_id)
    db.commit()
    return Response(status_code=204)


@router.delete("/agents/{agent_id}/memories", response_model=Deleted)
def delete_agent_memories(agent_id: PathId, db: Db, services: ServicesDep, principal: CurrentKey,
                          document_id: QueryId = None, session_id: QueryId = None, event_id: QueryId = None,
                          all: bool = Query(False, description="delete every memory of the agent"),
                          weights: bool | None = Query(
                              None, description="also take the source out of the weights by a forget job (default "
                                                "true for a document, session or event; not for all=true)")) -> Deleted:
    agent = agent_for(db, principal, agent_id)
    if all:
        if weights:
            raise ApiError(422, "weights=true forgets one source (?document_id=, ?session_id= or ?event_id=); "
                                "to take everything out of the weights, roll back to version 0 "
                                "(POST .../weights/rollback)")
        with unprocessable(message="name exactly one of ?document_id=, ?session_id=, ?event_id= or ?all=true"):
            deleted = delete_memories(db, agent_id=agent.id, document_id=document_id, session_id=session_id,
                                      event_id=event_id, everything=all)
        db.commit()
        return Deleted(deleted=deleted)
    db.rollback()  # the forget writes in a transaction of its own
    with unprocessable(message="name exactly one of ?document_id=, ?session_id=, ?event_id= or ?all=true"):
        forgotten = forget_memories(services.celery, services.sessions, agent_id=agent.id,
                                    weights=weights is not False, document_id=document_id, session_id=session_id,
                                    event_id=event_id)
    job = None if forgotten.job_id is None else ForgetJobPublic.model_validate(db.get(ForgetJob, forgotten.job_id))
    return Deleted(deleted=forgotten.deleted, job=job)


@router.get("/agents/{agent_id}/forget-jobs/{job_id}", response_model=ForgetJobPublic)
def get_forget_job(agent_id: PathId, job_id: PathId, db: Db, principal: CurrentKey) -> ForgetJobPublic:
    """A forget job's status and progress (events and bytes re-learned of the total)."""
    agent = agent_for(db, principal, agent_id)
    job = db.get(ForgetJob, job_id)
    if job is None or job.agent_id != agent.id:
        raise not_found(f"forget job {job_id}")
    return ForgetJobPublic.model_validate(job)


@router.post("/agents/{agent_id}/memories/recall", response_model=list[RecallHitPublic])
async def recall_memories(agent_id: PathId, body: RecallRequest, services: ServicesDep,
                          principal: CurrentKey) -> list[RecallHitPublic]:
    """The memories the retrieval layer would fetch while reading `query` (from a fresh stream)."""

    def work() -> list[RecallHitPublic]:
        with services.sessions() as db:
            runtime = services.runtimes.get(agent_for(db, principal, agent_id))
            with unprocessable():
                hits = runtime.recall(db, query=body.query, limit=body.top_k)
        return [RecallHitPublic.model_validate(hit) for hit in hits]

    return await run_in_threadpool(work)


@router.get("/agents/{agent_id}/memories/export", response_class=StreamingResponse,
            responses={200: {"content": {"application/x-ndjson": {}}}})
def export_memories(agent_id: PathId, db: Db, services: ServicesDep, principal: CurrentKey) -> StreamingResponse:
    """One JSON line per memory, pairs included, oldest first; streamed from the database."""
    agent_id = agent_for(db, principal, agent_id).id

    def lines():
        with services.sessions() as export_db:  # its own: the request's session closes before the stream ends
            for line in export_ndjson(export_db, agent_id=agent_id):
                yield line + "\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")


@router.post("/agents/{agent_id}/memories/import", response_model=Imported,
             openapi_extra={"requestBody": {"content": {"application/x-ndjson": {}}, "required": True}})
async def import_memories(agent_id: PathId, request: Request, services: ServicesDep, principal: CurrentKey) -> Imported:
    """All or nothing: a bad line is a 422 naming it, and nothing is imported.

    Lines are checked as they arrive, so a bad one is answered without reading the rest of the body."""

    def open_runtime():
        with services.sessions() as db:
            return services.runtimes.get(agent_for(db, principal, agent_id))

    runtime = await run_in_threadpool(open_runtime)
    spans = []
    async for number, line in ndjson_lines(request.stream(), max_line=MAX_IMPORT_LINE):
        with unprocessable():
            spans.append(await run_in_threadpool(span_from_line, line, number, runtime.store))

    def work() -> int:
        with services.sessions() as db:
            runtime.store.add_spans(spans, db=db)
            db.commit()
        runtime.store.catch_up()
        return len(spans)

    return Imported(imported=await run_in_threadpool(work))
