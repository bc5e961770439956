"""/mcp on `lifelong serve`: the MCP server (agent.mcp_server) over streamable HTTP, in the API's own process.

Stateless: each MCP request stands alone, as the API's do, so any server process answers any request and a
restart loses no MCP session. A request without a valid API key is a 401 before the MCP layer sees it; with
one, the tools call this same app in-process (no socket) with that key, so the key's scope is the API's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import httpx
from fastapi import FastAPI
from mcp.server.mcpserver import Context
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
from mcp.server.transport_security import TransportSecuritySettings
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from agent.auth import lookup
from agent.client import TIMEOUT
from agent.errors import error_response
from agent.mcp_server import LifelongApi, build_server

PATH = "/mcp"


class McpEndpoint:
    """The ASGI endpoint at /mcp and the lifespan its session manager needs (`running()`)."""

    def __init__(self, api_app: FastAPI):
        self.api_app = api_app
        self.server = build_server(self._open_api)
        # Builds the SDK's session manager (the returned Starlette app is not used: /mcp is a route of ours).
        # DNS-rebinding checks are off: they guard servers that trust whoever reaches them, and every request
        # here must carry an API key, which a rebinding page does not have.
        self.server.streamable_http_app(
            streamable_http_path=PATH, stateless_http=True, json_response=True,
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))
        self.handler = StreamableHTTPASGIApp(self.server.session_manager)

    def running(self) -> AbstractAsyncContextManager[None]:
        return self.server.session_manager.run()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not await self._authorized(scope):
            response = error_response(401, "unauthorized", "send an API key as 'Authorization: Bearer <key>'",
                                      headers={"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        await self.handler(scope, receive, send)

    async def _authorized(self, scope: Scope) -> bool:
        scheme, _, key = _header(scope, b"authorization").partition(" ")
        if scheme.lower() != "bearer" or not key:
            return False
        services = self.api_app.state.services

        def check() -> bool:
            with services.sessions() as db:
                return lookup(db, key.strip()) is not None

        return await run_in_threadpool(check)

    @asynccontextmanager
    async def _open_api(self, ctx: Context) -> AsyncIterator[LifelongApi]:
        headers = {"Authorization": (ctx.headers or {}).get("authorization", "")}
        transport = httpx.ASGITransport(app=self.api_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://lifelong", headers=headers,
                                     timeout=TIMEOUT) as http:
            yield LifelongApi(http)


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return value.decode("latin-1")
    return ""
