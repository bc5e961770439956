"""`lifelong chat`: an interactive chat in a session that never has to end, the reply streamed as it comes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator

from agent.client import JSON, Client
from agent.commands.common import guarded, make_client, print_json

PROMPT = "you> "


def _chat(args: argparse.Namespace) -> int:
    if args.session is None and args.agent is None:
        raise ValueError("name the agent to talk to with --agent ID, or resume a session with --session ID")
    interactive = sys.stdin.isatty() and not args.json
    with make_client(args) as client:
        if args.session is not None:
            session_id = int(client.get_session(args.session)["id"])  # fails early (404) on a wrong id
        else:
            session_id = int(client.create_session(args.agent)["id"])
        if args.json:
            print_json({"session_id": session_id})
        else:
            # Stderr, so stdout holds only the agent's words when piped.
            print(f"session {session_id} (resume it with --session {session_id}; Ctrl-D ends)", file=sys.stderr)
        for line in _messages(args.message, interactive):
            _turn(client, session_id, line, args)
    return 0


def _messages(message: str | None, interactive: bool) -> Iterator[str]:
    """One message from -m, else each line typed (or piped) until end of input."""
    if message is not None:
        yield message
        return
    while True:
        try:
            line = input(PROMPT if interactive else "")
        except EOFError:
            if interactive:
                print()
            return
        if line.strip():
            yield line


def _turn(client: Client, session_id: int, content: str, args: argparse.Namespace) -> None:
    reply: list[str] = []
    done: JSON = {}
    for event in client.stream_message(session_id, content, max_tokens=args.max_tokens,
                                       temperature=args.temperature, seed=args.seed):
        if event.event == "piece":
            text = event.data.get("text", "")
            reply.append(text)
            if not args.json:
                print(text, end="", flush=True)
        elif event.event == "done":
            done = event.data
    if args.json:
        print_json({"session_id": session_id, "reply": "".join(reply), **done})
    else:
        print(flush=True)


def register(commands: argparse._SubParsersAction, options: argparse.ArgumentParser) -> None:
    chat = commands.add_parser("chat", parents=[options], help="chat with an agent on a server (streams the reply)")
    chat.add_argument("--agent", type=int, help="start a new session with this agent")
    chat.add_argument("--session", type=int, help="resume this session (it keeps its whole history)")
    chat.add_argument("--message", "-m", help="send one message and exit (default: read lines until Ctrl-D)")
    chat.add_argument("--max-tokens", type=int, help="longest reply in the model's tokens (default: 256)")
    chat.add_argument("--temperature", type=float)
    chat.add_argument("--seed", type=int, help="for a reproducible reply")
    chat.set_defaults(handler=guarded(_chat))
