"""`lifelong mcp`: the MCP server over stdio, for MCP clients that start their servers as commands.

It calls a running `lifelong serve` over HTTP with one API key (agent.mcp_server); the same server is also
mounted by `lifelong serve` itself at /mcp, over streamable HTTP.
"""

from __future__ import annotations

import argparse

from agent.commands.common import api_key, guarded, make_client, server_url


def _mcp(args: argparse.Namespace) -> int:
    from agent.mcp_server import build_server, remote_api

    # Checked before serving: an MCP client shows a server that dies at start as one line of stderr, and a
    # wrong URL or key is better said there than on every tool call.
    with make_client(args) as client:
        next(iter(client.list_agents(limit=1)), None)
    build_server(remote_api(server_url(args), api_key(args))).run("stdio")
    return 0


def register(commands: argparse._SubParsersAction, options: argparse.ArgumentParser) -> None:
    mcp = commands.add_parser(
        "mcp", parents=[options],
        help="serve lifelong's tools (remember, recall, forget, chat) and memories to MCP clients over stdio",
        description="An MCP server over stdio that calls a running `lifelong serve` with one API key. "
                    "`lifelong serve` also serves MCP over streamable HTTP at /mcp.")
    mcp.set_defaults(handler=guarded(_mcp))
