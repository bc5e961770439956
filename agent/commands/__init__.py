"""The CLI's commands beside `serve` and `worker`: the client commands (they talk to a running server over HTTP,
docs/API.md), `migrate`, and the native model's training (`training`) and evaluations (`evaluation`)."""

from __future__ import annotations

import argparse

from agent.commands import agents, chat, ingest, keys, mcp, memories, migrate
from agent.commands.common import client_options


def register(commands: argparse._SubParsersAction) -> None:
    options = client_options()
    for module in (chat, ingest, memories, agents, keys, mcp):
        module.register(commands, options)
    migrate.register(commands)
