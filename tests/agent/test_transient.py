"""A route's transient database error is retried whole, with the same body; one that persists, or a database
that cannot be reached, is a 503 with Retry-After (never a 500). A unit test over a small app in process."""

from __future__ import annotations

import asyncio

import httpx
import psycopg
from fastapi import FastAPI, Request
from sqlalchemy.exc import OperationalError

from agent import transient
from agent.errors import install_error_handlers
from agent.transient import RetryTransientErrors


def _error(sqlstate: str) -> OperationalError:
    return OperationalError("UPDATE agents ...", {}, psycopg.errors.lookup(sqlstate)("conflict"))


def _app(failures: list[OperationalError]) -> tuple[FastAPI, list[bytes]]:
    """An app whose routes raise `failures` in turn, then answer; and the bodies its routes read."""
    app = FastAPI()
    bodies: list[bytes] = []

    @app.post("/async")
    async def async_route(request: Request) -> dict:
        bodies.append(await request.body())
        if failures:
            raise failures.pop(0)
        return {"read": bodies[-1].decode()}

    @app.post("/agents/1/documents")
    async def upload(request: Request) -> dict:
        bodies.append(await request.body())
        if failures:
            raise failures.pop(0)
        return {"ok": True}

    @app.get("/sync")
    def sync_route() -> dict:  # run in a thread, as the database routes are
        bodies.append(b"")
        if failures:
            raise failures.pop(0)
        return {"ok": True}

    app.add_middleware(RetryTransientErrors)
    install_error_handlers(app)
    return app, bodies


def _call(app: FastAPI, method: str, path: str, **kwargs) -> httpx.Response:
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(go())


def test_a_deadlock_is_retried_with_the_same_body(monkeypatch):
    monkeypatch.setattr(transient, "FIRST_DELAY_S", 0.001)
    app, bodies = _app([_error("40P01"), _error("40001")])
    response = _call(app, "POST", "/async", content=b"the same bytes, chunked or not")
    assert response.status_code == 200, response.text
    assert response.json() == {"read": "the same bytes, chunked or not"}
    assert bodies == [b"the same bytes, chunked or not"] * 3


def test_a_conflict_that_persists_is_a_503_with_retry_after(monkeypatch):
    monkeypatch.setattr(transient, "FIRST_DELAY_S", 0.001)
    app, bodies = _app([_error("40P01")] * transient.ATTEMPTS)
    response = _call(app, "GET", "/sync")
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    assert response.json()["error"]["code"] == "unavailable"
    assert len(bodies) == transient.ATTEMPTS


def test_an_unreachable_database_is_a_503_at_once():
    app, bodies = _app([_error("08006")])  # connection failure: not a conflict a retry of ours clears
    response = _call(app, "GET", "/sync")
    assert response.status_code == 503 and response.json()["error"]["code"] == "unavailable"
    assert len(bodies) == 1


def test_an_upload_is_never_run_twice(monkeypatch):
    """An upload commits its chunks as they arrive: run again, it would store the document twice."""
    monkeypatch.setattr(transient, "FIRST_DELAY_S", 0.001)
    app, bodies = _app([_error("40P01")])
    response = _call(app, "POST", "/agents/1/documents", content=b"chunks")
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    assert len(bodies) == 1
