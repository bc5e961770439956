"""`lifelong ingest FILE|-`: stream a document to an agent, then follow its learning to the end."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tqdm import tqdm

from agent.client import FINISHED_DOCUMENT_STATUSES, JSON, Client
from agent.commands.common import agent_option, emit_object, guarded, make_client
from agent.commands.streams import open_source, pieces

DOCUMENT_FIELDS = ("id", "name", "status", "bytes_received", "bytes_learned", "failed_reason")
NDJSON_SUFFIXES = {".ndjson", ".jsonl"}


def _ingest(args: argparse.Namespace) -> int:
    stream, size = open_source(args.file)
    content_type = "application/x-ndjson" if args.ndjson or Path(args.file).suffix in NDJSON_SUFFIXES else "text/plain"
    name = args.name or (None if args.file == "-" else Path(args.file).name)
    quiet = args.json or args.quiet
    with stream, make_client(args) as client:
        # tqdm writes to stderr and hides itself when that is not a terminal (disable=None).
        with _bar(size, "sent", quiet) as sent:
            document = client.upload_document(args.agent, pieces(stream, sent.update), name=name,
                                              content_type=content_type)
        if not args.no_wait:
            document = _follow(client, document, args.poll_s, quiet)
    emit_object(args, document, DOCUMENT_FIELDS)
    if document.get("status") == "failed":
        print(f"lifelong ingest: document {document['id']} failed: {document.get('failed_reason')}", file=sys.stderr)
        return 1
    return 0


def _follow(client: Client, document: JSON, poll_s: float, quiet: bool) -> JSON:
    """Poll the document until it is learned or failed, with a bar of bytes learned."""
    with _bar(document.get("bytes_received"), "learned", quiet) as learned:
        while True:
            learned.update(document.get("bytes_learned", 0) - learned.n)
            if document.get("status") in FINISHED_DOCUMENT_STATUSES:
                return document
            time.sleep(poll_s)
            document = client.get_document(document["id"])


def _bar(total: int | None, label: str, quiet: bool) -> tqdm:
    return tqdm(total=total, desc=label, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                disable=True if quiet else None)


def register(commands: argparse._SubParsersAction, options: argparse.ArgumentParser) -> None:
    ingest = commands.add_parser("ingest", parents=[options], help="stream a document into an agent and follow its "
                                                                   "learning (FILE, or - for stdin)")
    ingest.add_argument("file")
    agent_option(ingest)
    ingest.add_argument("--name", help="the document's name (default: the file name)")
    ingest.add_argument("--ndjson", action="store_true", help='the input is NDJSON of {"text": ...} pieces '
                                                              "(default for .ndjson/.jsonl files)")
    ingest.add_argument("--no-wait", action="store_true", help="return once the server has the document")
    ingest.add_argument("--poll-s", type=float, default=1.0, help="seconds between progress checks")
    ingest.add_argument("--quiet", action="store_true", help="no progress bars")
    ingest.set_defaults(handler=guarded(_ingest))
