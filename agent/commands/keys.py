"""`lifelong keys create|list|revoke` (admin)."""

from __future__ import annotations

import argparse
import sys

from agent.commands.common import emit_list, emit_result, guarded, make_client, print_json

KEY_FIELDS = ("id", "agent_id", "name", "created_at", "revoked_at")


def _create(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        key = client.create_key(agent_id=args.agent, name=args.name)
    if args.json:
        print_json(key)
        return 0
    scope = f"agent {key['agent_id']}" if key.get("agent_id") is not None else "admin"
    print(key["key"])
    # The secret goes to stdout alone (so `$(lifelong keys create ...)` captures it); the rest is for people.
    print(f"key {key['id']} ({scope}); it is shown only once, so store it now", file=sys.stderr)
    return 0


def _list(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        return emit_list(args, client.list_keys(), KEY_FIELDS, empty="no keys")


def _revoke(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        client.revoke_key(args.key_id)
    return emit_result(args, {"revoked": args.key_id}, f"revoked key {args.key_id}")


def register(commands: argparse._SubParsersAction, options: argparse.ArgumentParser) -> None:
    keys = commands.add_parser("keys", help="create, list and revoke API keys (admin key needed)")
    actions = keys.add_subparsers(dest="keys_command", required=True)
    create = actions.add_parser("create", parents=[options], help="create a key (printed once)")
    create.add_argument("--agent", type=int, help="scope the key to this agent (default: an admin key)")
    create.add_argument("--name", help="a label to recognise the key by")
    create.set_defaults(handler=guarded(_create))
    listing = actions.add_parser("list", parents=[options], help="list keys (never the secrets)")
    listing.set_defaults(handler=guarded(_list))
    revoke = actions.add_parser("revoke", parents=[options], help="revoke a key")
    revoke.add_argument("key_id", type=int)
    revoke.set_defaults(handler=guarded(_revoke))
