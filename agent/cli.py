"""The `lifelong` command line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from agent.demo import DEFAULT_FILE, run_demo
from learner.corpus import build_corpus


def _demo(args: argparse.Namespace) -> int:
    report = run_demo(
        checkpoint=args.checkpoint, preset=args.preset, source=args.file,
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


def _corpus_build(args: argparse.Namespace) -> int:
    manifest = build_corpus(args.out, seed=args.seed, max_bytes_per_source=args.max_bytes_per_source)
    if args.json:
        print(json.dumps(manifest))
        return 0
    for source in manifest["sources"]:
        if not source["included"]:
            print(f"{source['name']:>14}: skipped ({source['reason']})")
            continue
        splits = source["splits"]
        print(f"{source['name']:>14}: {splits['train']['bytes']:>12,} train bytes, "
              f"{splits['heldout']['bytes']:>10,} held-out bytes  [{source['licence']}]")
    print(f"manifest: {args.out / 'manifest.json'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lifelong", description="A continual-learning agent with memory.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="stream a text file through the model and sample from it")
    demo.add_argument("--file", type=Path, default=DEFAULT_FILE, help="text to stream (default: %(default)s)")
    demo.add_argument("--checkpoint", type=Path, help="a saved model directory (default: a fresh model)")
    demo.add_argument("--preset", default="small", help="model preset when no checkpoint is given")
    demo.add_argument("--max-bytes", type=int, default=16_384, help="bytes of the file to read")
    demo.add_argument("--chunk", type=int, default=512, help="bytes per model call")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--json", action="store_true", help="print one JSON object")
    demo.set_defaults(handler=_demo)

    corpus = commands.add_parser("corpus", help="the training corpus").add_subparsers(dest="corpus_command", required=True)
    build = corpus.add_parser("build", help="build the corpus from this machine's own text (no downloads)")
    build.add_argument("--out", type=Path, default=Path("data/corpus"), help="output directory (default: %(default)s)")
    build.add_argument("--seed", type=int, default=0, help="seed of the synthetic tasks")
    build.add_argument("--max-bytes-per-source", type=int, help="cap each source (for quick builds)")
    build.add_argument("--json", action="store_true", help="print the manifest as one JSON object")
    build.set_defaults(handler=_corpus_build)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (OSError, ValueError) as exc:
        print(f"lifelong {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
