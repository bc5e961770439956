"""`lifelong agents create|list|show|versions|delete`."""

from __future__ import annotations

import argparse
import json

from agent.client import JSON
from agent.commands.common import emit_list, emit_object, emit_result, guarded, make_client

AGENT_FIELDS = ("id", "name", "weight_version", "memory_count", "bytes_learned", "queue_lag")


def _create(args: argparse.Namespace) -> int:
    try:
        learning = None if args.learning is None else json.loads(args.learning)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--learning is not a JSON object: {exc}") from exc
    with make_client(args) as client:
        agent = client.create_agent(name=args.name, base_checkpoint=args.base_checkpoint, learning=learning)
    return emit_result(args, agent, f"created agent {agent['id']} ({agent.get('name', args.name)})")


def _list(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        return emit_list(args, client.list_agents(), AGENT_FIELDS, empty="no agents")


def _show(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        agent = client.get_agent(args.agent_id)
    return emit_object(args, agent, AGENT_FIELDS)


VERSION_FIELDS = ("version", "parent_version", "events_learned_through", "gate", "created_at")


def _gate(gate: JSON | None) -> str:
    return "" if not gate else "passed" if gate.get("passed") else "refused"


def _versions(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        rows = client.list_versions(args.agent_id, limit=args.limit)
        if args.json:
            return emit_list(args, rows, VERSION_FIELDS, empty="")
        rows = list(rows)
    emit_list(args, [{**row, "gate": _gate(row.get("gate"))} for row in rows], VERSION_FIELDS,
              empty="no learned versions yet (version 0 is the base model)")
    for row in rows:  # a reason is a sentence: under the table, whole
        if row.get("gate") and not row["gate"].get("passed"):
            print(f"v{row['version']} refused: {row['gate'].get('reason')}")
    return 0


def _delete(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        client.delete_agent(args.agent_id)
    return emit_result(args, {"deleted": args.agent_id}, f"deleted agent {args.agent_id}")


def register(commands: argparse._SubParsersAction, options: argparse.ArgumentParser) -> None:
    agents = commands.add_parser("agents", help="create, list, inspect and delete agents (a server's API)")
    actions = agents.add_subparsers(dest="agents_command", required=True)
    create = actions.add_parser("create", parents=[options], help="create an agent")
    create.add_argument("name")
    create.add_argument(
        "--base-checkpoint", help="a base model: an installed model's name (lifelong models list), 'small', "
        "a path on the server (model directory or .gguf file) or 'preset:NAME' (default: the server's)"
    )
    create.add_argument("--learning", help="learning settings as a JSON object, e.g. '{\"learning_rate\": 0.001}'")
    create.set_defaults(handler=guarded(_create))
    listing = actions.add_parser("list", parents=[options], help="list agents")
    listing.set_defaults(handler=guarded(_list))
    show = actions.add_parser("show", parents=[options], help="weight version, memories, bytes learned, queue lag")
    show.add_argument("agent_id", type=int)
    show.set_defaults(handler=guarded(_show))
    versions = actions.add_parser("versions", parents=[options],
                                  help="its weight versions, newest first, and what the behavioural gate said")
    versions.add_argument("agent_id", type=int)
    versions.add_argument("--limit", type=int, help="at most this many")
    versions.set_defaults(handler=guarded(_versions))
    delete = actions.add_parser("delete", parents=[options], help="delete an agent with its memories and weights")
    delete.add_argument("agent_id", type=int)
    delete.set_defaults(handler=guarded(_delete))
