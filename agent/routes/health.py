"""Liveness, readiness and metrics (no key needed: probes and scrapers; nothing per agent is shown)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import text

from agent.deps import ServicesDep
from agent.services import Services

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict:
    return {"status": "ok"}


def _checks(services: Services) -> dict[str, str]:
    checks = {}
    try:
        with services.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # any failure means not ready
        checks["database"] = f"unreachable: {type(exc).__name__}"
    try:
        with services.celery.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
        checks["broker"] = "ok"
    except Exception as exc:
        checks["broker"] = f"unreachable: {type(exc).__name__}"
    checks["model"] = "ok" if services.model_loaded.is_set() else "loading (or failed: see the log)"
    return checks


@router.get("/readyz")
async def readyz(services: ServicesDep) -> JSONResponse:
    checks = await run_in_threadpool(_checks, services)
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks}, status_code=200 if ready else 503
    )


@router.get("/metrics")
async def metrics(services: ServicesDep) -> Response:
    body = await run_in_threadpool(services.metrics.render)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")
