"""The `lifelong` command line.

Commands import what they run inside their handlers: the client commands (chat, ingest, ...) then
start without loading torch, which would add a second to every call.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

from agent.commands import evaluation, training
from agent.commands import register as register_client_commands


def _demo(args: argparse.Namespace) -> int:
    from agent.demo import DEFAULT_FILE, run_demo

    report = run_demo(
        checkpoint=args.checkpoint, preset=args.preset, source=args.file or DEFAULT_FILE,
        max_bytes=args.max_bytes, chunk=args.chunk, seed=args.seed,
    )
    if args.json:
        print(json.dumps(dataclasses.asdict(report)))
        return 0
    print(f"read {report.bytes_read} bytes of {report.source} at {report.bytes_per_s:,.0f} bytes/s")
    print(f"prequential bits per byte: {report.bits_per_byte:.3f} (8.0 is a uniform guess)")
    print(f"retrieval memory: {report.memory_pairs} (key, value) pairs; session state: {report.state_bytes:,} bytes")
    print(f"sampled continuation: {report.sample!r}")
    return 0


def _models_list(args: argparse.Namespace) -> int:
    from learner.base import base_models

    rows = base_models()
    if args.json:
        print(json.dumps(rows))
        return 0
    for row in rows:
        size = f"{row['size_bytes'] / 1e6:,.0f} MB" if row["size_bytes"] else "-"
        state = "installed" if row["installed"] else f"not installed: {row['install']}"
        mark = " (default for new agents)" if row["default"] else ""
        print(f"{row['name']}{mark}\n  {row['description']}\n  {state}; {size}; {row['tokenizer']}; "
              f"{'converses' if row['chat'] else 'no chat tuning'}; licence: {row['licence']}")
    return 0


def _worker(args: argparse.Namespace) -> int:
    from settings import Settings
    from workers.app import run_worker

    queues = {"queues": tuple(args.queues.split(","))} if args.queues else {}
    run_worker(Settings(), **queues, concurrency=args.concurrency, loglevel=args.loglevel, hostname=args.hostname)
    return 0


def _serve(args: argparse.Namespace) -> int:
    from agent.serve import serve
    from settings import Settings

    serve(
        Settings(),
        host=args.host,
        port=args.port,
        migrate=not args.no_migrate,
        worker=False if args.no_worker else None,
        log_level=args.log_level,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lifelong", description="A continual-learning agent with memory.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="stream a text file through the model and sample from it")
    demo.add_argument("--file", type=Path, help="text to stream (default: the Python standard library's textwrap.py)")
    demo.add_argument("--checkpoint", type=Path, help="a saved model directory (default: checkpoints/small if shipped)")
    demo.add_argument("--preset", default="small", help="model preset when no checkpoint is given")
    demo.add_argument("--max-bytes", type=int, default=16_384, help="bytes of the file to read")
    demo.add_argument("--chunk", type=int, default=512, help="bytes per model call")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--json", action="store_true", help="print one JSON object")
    demo.set_defaults(handler=_demo)

    models = commands.add_parser("models", help="the base models agents can use").add_subparsers(
        dest="models_command", required=True)
    listing = models.add_parser("list", help="installed and installable base models, with size and licence")
    listing.add_argument("--json", action="store_true", help="one JSON array")
    listing.set_defaults(handler=_models_list)

    training.register(commands)  # corpus build, train-base, export-checkpoint
    evaluation.register(commands)  # eval stream, passkey, forgetting

    worker = commands.add_parser(
        "worker",
        help="run a Celery worker: online learning, ingestion, maintenance "
        "(configured by LIFELONG_* environment variables)",
    )
    worker.add_argument("--queues", help="comma-separated (default: every queue, learn and maintenance)")
    worker.add_argument("--concurrency", type=int, help="worker processes (default: LIFELONG_WORKER_CONCURRENCY or 1)")
    worker.add_argument("--loglevel", default="INFO")
    worker.add_argument("--hostname", help="Celery node name, e.g. learn1@%%h")
    worker.set_defaults(handler=_worker)

    serve = commands.add_parser(
        "serve",
        help="run the HTTP API (and, on the embedded defaults, a learning worker "
        "beside it: no external service needed)",
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--no-migrate", action="store_true", help="do not upgrade the database schema at start")
    serve.add_argument("--no-worker", action="store_true", help="never start a worker here (run 'lifelong worker')")
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(handler=_serve)

    register_client_commands(commands)  # chat, ingest, memories, agents, keys (HTTP clients) and migrate
    return parser


def main(argv: list[str] | None = None) -> int:
    # Plain lines on stderr, warnings and worse, for every command. Set before anything builds the MCP server,
    # whose SDK would otherwise put its own handler (rich, INFO and up) on the root logger.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (OSError, ValueError) as exc:
        print(f"lifelong {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
