"""The FastAPI application: `create_app(settings)`; OpenAPI docs at /docs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import Scope

from agent.console import pages as console
from agent.errors import install_error_handlers
from agent.limits import BodyLimitMiddleware
from agent.mcp_http import PATH as MCP_PATH
from agent.mcp_http import McpEndpoint
from agent.metrics import MetricsMiddleware
from agent.routes import agents, base_models, documents, health, learning, memories, openai, sessions, weights
from agent.schemas import ERROR_RESPONSES
from agent.services import Services
from agent.transient import RetryTransientErrors
from settings import Settings

# JSON bodies hold a message whose bytes may be escaped (\uXXXX: 6 characters a byte), plus the rest.
JSON_OVERHEAD = 16 * 1024


def body_limit(settings: Settings):
    """Documents, imports and OpenAI requests (whole histories) may be large; other bodies hold one message."""
    large = ("/documents", "/memories/import", "/chat/completions")

    def limit_for(scope: Scope) -> int:
        if scope["path"].endswith(large):
            return settings.max_document_bytes
        return 6 * settings.max_message_bytes + JSON_OVERHEAD

    return limit_for


def create_app(settings: Settings, services: Services | None = None) -> FastAPI:
    """The API over `settings`; `services` are started with the app unless given (then the caller owns them)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        started = services or Services.start(settings)
        app.state.services = started
        async with mcp.running():
            yield
        if services is None:
            started.close()

    app = FastAPI(title="lifelong", version="1", lifespan=lifespan, responses=ERROR_RESPONSES,
                  description="A continual-learning agent service with memory. See docs/API.md.")
    app.add_middleware(RetryTransientErrors)  # innermost: it sees a route's database error before anything else
    install_error_handlers(app)
    for module in (agents, base_models, sessions, documents, memories, weights, learning, openai, health, console):
        app.include_router(module.router)
    mcp = McpEndpoint(app)  # the MCP server over streamable HTTP (agent.mcp_http)
    app.router.add_route(MCP_PATH, mcp, include_in_schema=False)
    app.add_middleware(BodyLimitMiddleware, limit_for=body_limit(settings))
    app.add_middleware(MetricsMiddleware)
    return app
