"""`lifelong memories list|show|recall|forget|export|import`: inspect and curate what an agent remembers."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tqdm import tqdm

from agent.commands.common import agent_option, emit_list, emit_object, emit_result, guarded, make_client
from agent.commands.streams import open_source, pieces

# Provenance first: the event a memory was read from and that event's document or chat session.
MEMORY_FIELDS = ("id", "event_id", "document_id", "session_id", "weight_version", "hit_count", "text")
RECALL_FIELDS = ("memory_id", "score", "model_score", "lexical_score", "token_hits", "text")


def _list(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        rows = client.list_memories(args.agent, limit=args.limit, document_id=args.document, session_id=args.session,
                                    event_id=args.event, text=args.text)
        return emit_list(args, rows, MEMORY_FIELDS, empty="no memories")


def _show(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        return emit_object(args, client.get_memory(args.memory_id), MEMORY_FIELDS)


def _recall(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        hits = client.recall(args.agent, args.query, top_k=args.top_k)
    return emit_list(args, hits, RECALL_FIELDS, empty="nothing would be recalled")


def _forget(args: argparse.Namespace) -> int:
    chosen = [args.memory_id, args.document, args.session, args.event]
    if sum(x is not None for x in chosen) + args.all != 1:
        raise ValueError("name exactly one of: a memory id, --document ID, --session ID, --event ID, --all")
    with make_client(args) as client:
        if args.memory_id is not None:
            if args.weights:
                raise ValueError("--weights forgets a source (--document, --session or --event), not one memory")
            client.delete_memory(args.memory_id)
            return emit_result(args, {"deleted": 1}, f"forgot memory {args.memory_id}")
        if args.agent is None:
            raise ValueError("--agent is needed to forget by --document, --session, --event or --all")
        if args.all and args.weights:
            raise ValueError("--weights forgets one source (--document, --session or --event); "
                             "to take everything out of the weights, roll back to version 0")
        result = client.delete_memories(args.agent, document_id=args.document, session_id=args.session,
                                        event_id=args.event, everything=args.all, weights=args.weights)
        job = result.get("job")
        if job is not None and not args.no_wait:
            job = result["job"] = _follow_job(client, job, args.poll_s, quiet=args.json or args.quiet)
    message = f"forgot {result.get('deleted', 0)} memories"
    if job is not None:
        message += (f"; weights: forget job {job['id']} {job['status']}"
                    + (f", version {job['result_version']} is current" if job.get("result_version") else ""))
    emit_result(args, result, message)
    if job is not None and job.get("status") == "failed":
        print(f"lifelong memories forget: forget job {job['id']} failed: {job.get('failed_reason')}", file=sys.stderr)
        return 1
    return 0


def _follow_job(client, job: dict, poll_s: float, quiet: bool) -> dict:
    """Poll a forget job until it is done or failed, with a bar of the bytes it has re-learned."""
    # tqdm writes to stderr and hides itself when that is not a terminal (disable=None).
    with tqdm(total=job.get("bytes_total") or None, desc="replayed", unit="B", unit_scale=True, unit_divisor=1024,
              file=sys.stderr, disable=True if quiet else None) as bar:
        while True:
            if job.get("bytes_total") and bar.total != job["bytes_total"]:
                bar.total = job["bytes_total"]
                bar.refresh()
            bar.update(job.get("bytes_done", 0) - bar.n)
            if job.get("status") in ("done", "failed"):
                return job
            time.sleep(poll_s)
            job = client.get_forget_job(job["agent_id"], job["id"])


def _export(args: argparse.Namespace) -> int:
    if args.out == "-":
        with make_client(args) as client:
            for piece in client.export_memories(args.agent):
                sys.stdout.buffer.write(piece)
        sys.stdout.buffer.flush()
        return 0
    # Written beside the target and renamed when complete: a broken stream leaves no half
    # export behind, and an earlier export at that path stays as it was.
    target = Path(args.out)
    partial = target.with_name(target.name + ".partial")
    try:
        with make_client(args) as client, partial.open("wb") as out:
            for piece in client.export_memories(args.agent):
                out.write(piece)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    print(f"exported agent {args.agent}'s memories to {args.out}", file=sys.stderr)
    return 0


def _import(args: argparse.Namespace) -> int:
    stream, _ = open_source(args.file)
    with stream, make_client(args) as client:
        result = client.import_memories(args.agent, pieces(stream))
    return emit_result(args, result, f"imported {result.get('imported', 0)} memories into agent {args.agent}")


def register(commands: argparse._SubParsersAction, options: argparse.ArgumentParser) -> None:
    memories = commands.add_parser("memories", help="list, inspect, recall, forget, export and import memories")
    actions = memories.add_subparsers(dest="memories_command", required=True)

    listing = actions.add_parser("list", parents=[options], help="newest first, with filters")
    agent_option(listing)
    listing.add_argument("--document", type=int, help="only memories of this document")
    listing.add_argument("--session", type=int, help="only memories of this session")
    listing.add_argument("--event", type=int, help="only memories read from this event (a message or a chunk)")
    listing.add_argument("--text", help="only memories whose text contains this")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (default: %(default)s)")
    listing.set_defaults(handler=guarded(_list))

    show = actions.add_parser("show", parents=[options], help="one memory with provenance and hit statistics")
    show.add_argument("memory_id", type=int)
    show.set_defaults(handler=guarded(_show))

    recall = actions.add_parser("recall", parents=[options], help="what the agent would recall reading a text")
    agent_option(recall)
    recall.add_argument("query")
    recall.add_argument("--top-k", type=int)
    recall.set_defaults(handler=guarded(_recall))

    forget = actions.add_parser("forget", parents=[options], help="delete one memory, or a source's, or all")
    forget.add_argument("memory_id", type=int, nargs="?")
    agent_option(forget, required=False)
    forget.add_argument("--document", type=int, help="forget everything learned from this document")
    forget.add_argument("--session", type=int, help="forget everything learned from this session")
    forget.add_argument("--event", type=int, help="forget everything read from this event")
    forget.add_argument("--all", action="store_true", help="forget everything the agent remembers")
    weights = forget.add_mutually_exclusive_group()
    weights.add_argument("--weights", dest="weights", action="store_true", default=None,
                         help="also take the source out of the weights by a replay (the default for a source)")
    weights.add_argument("--no-weights", dest="weights", action="store_false",
                         help="delete the memories only; the weights keep what they learned")
    forget.add_argument("--no-wait", action="store_true", help="return once the forget job is queued")
    forget.add_argument("--poll-s", type=float, default=0.5, help="seconds between progress checks")
    forget.add_argument("--quiet", action="store_true", help="no progress bar")
    forget.set_defaults(handler=guarded(_forget))

    export = actions.add_parser("export", parents=[options], help="NDJSON of an agent's memories")
    agent_option(export)
    export.add_argument("--out", "-o", default="-", help="a file (default: stdout)")
    export.set_defaults(handler=guarded(_export))

    load = actions.add_parser("import", parents=[options], help="import an NDJSON export (FILE or - for stdin)")
    agent_option(load)
    load.add_argument("file")
    load.set_defaults(handler=guarded(_import))
