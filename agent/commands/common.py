"""What every client command shares: where the server is, how to authenticate, how to print, how to fail."""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from agent.client import DEFAULT_URL, JSON, ApiError, Client

Handler = Callable[[argparse.Namespace], int]
# A table cell longer than this is cut (a memory's text runs to hundreds of bytes); `show` prints it whole.
MAX_CELL = 60


def client_options() -> argparse.ArgumentParser:
    """A parent parser with --url, --key and --json, for every command that talks to a server."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--url", help=f"the server (default: LIFELONG_URL or {DEFAULT_URL})")
    parent.add_argument("--key", help="API key (default: LIFELONG_API_KEY)")
    parent.add_argument("--json", action="store_true", help="print JSON for scripts (one object, or NDJSON for lists)")
    return parent


def agent_option(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    parser.add_argument("--agent", type=int, required=required, help="agent id")


def server_url(args: argparse.Namespace) -> str:
    # Read here, at the edge, so flags win over the environment and tests can pass either.
    return args.url or os.environ.get("LIFELONG_URL") or DEFAULT_URL


def api_key(args: argparse.Namespace) -> str | None:
    return args.key or os.environ.get("LIFELONG_API_KEY")


def make_client(args: argparse.Namespace) -> Client:
    return Client(server_url(args), api_key(args))


def guarded(handler: Handler) -> Handler:
    """One line on stderr and exit status 1 for a failed request; 130 for Ctrl-C; never a traceback."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except ApiError as exc:
            print(f"lifelong {args.command}: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(file=sys.stderr)
            return 130

    return run


def print_json(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False), flush=True)


def print_object(obj: JSON, fields: Sequence[str] | None = None) -> None:
    """`field: value` lines; the named fields first, then the rest the server sent."""
    names = [f for f in fields or () if f in obj] + [k for k in obj if k not in (fields or ())]
    width = max((len(n) for n in names), default=0)
    for name in names:
        print(f"{name:>{width}}: {_cell(obj[name])}")


def print_table(rows: Iterable[JSON], columns: Sequence[str], *, empty: str) -> None:
    """An aligned table of the named columns (missing values blank); `empty` when there are no rows."""
    cells = [[_truncate(_cell(row.get(c))) for c in columns] for row in rows]
    if not cells:
        print(empty)
        return
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    for row in [list(columns), *cells]:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())


def emit_list(args: argparse.Namespace, rows: Iterable[JSON], columns: Sequence[str], *, empty: str) -> int:
    if args.json:
        for row in rows:
            print_json(row)  # NDJSON: one object per line, streamed as pages arrive
    else:
        print_table(rows, columns, empty=empty)
    return 0


def emit_object(args: argparse.Namespace, obj: JSON, fields: Sequence[str] = ()) -> int:
    if args.json:
        print_json(obj)
    else:
        print_object(obj, fields)
    return 0


def emit_result(args: argparse.Namespace, result: JSON, message: str) -> int:
    """A command's outcome: `result` as JSON for scripts, `message` for people."""
    if args.json:
        print_json(result)
    else:
        print(message)
    return 0


def _truncate(text: str) -> str:
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    text = str(value)
    # A table row is one line: show newlines in memory texts as the escapes they are.
    return text.replace("\n", "\\n") if "\n" in text else text
