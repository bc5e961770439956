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
from typing import TYPE_CHECKING

from agent.commands import register as register_client_commands

if TYPE_CHECKING:
    from learner.online import LearningConfig


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


def _corpus_build(args: argparse.Namespace) -> int:
    from learner.corpus import build_corpus

    synthetic = None if args.synthetic_train is None else {"train": args.synthetic_train, "heldout": 100}
    manifest = build_corpus(args.out, seed=args.seed, max_bytes_per_source=args.max_bytes_per_source,
                            synthetic_per_split=synthetic, synthetic_kinds=tuple(args.synthetic_kinds.split(",")),
                            synthetic_min_distance=args.synthetic_min_distance)
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


def _train_base(args: argparse.Namespace) -> int:
    from learner.train import TrainConfig, Trainer

    config = TrainConfig(preset=args.preset, steps=args.steps, batch_size=args.batch_size, chunk_tokens=args.chunk,
                         learning_rate=args.lr, bf16=not args.no_bf16, seed=args.seed,
                         checkpoint_every=args.checkpoint_every, train_only=tuple(args.train_only or ()),
                         recall_weight=args.recall_weight)
    trainer = Trainer(config, args.corpus, args.out, device=args.device)
    if trainer.resume():
        print(f"resuming {args.out} at step {trainer.step}")
    elif args.init:
        trainer.init_from(args.init)
        print(f"fine-tuning {args.init}")
    trainer.run(progress=not args.quiet, max_seconds=None if args.max_minutes is None else args.max_minutes * 60)
    print(f"checkpoint: {args.out / (args.out / 'latest').read_text().strip()}")
    return 0


def _learning_config(args: argparse.Namespace) -> LearningConfig:
    """The online learning settings of an eval command; options left out keep LearningConfig's defaults."""
    from learner.online import LearningConfig

    given = {"learning_rate": args.lr, "trainable": args.trainable, "rule": args.rule, "anchor_decay": args.anchor}
    return LearningConfig(**{name: value for name, value in given.items() if value is not None})


def _eval_stream(args: argparse.Namespace) -> int:
    from learner.evaluate import plot_arms, prequential

    data = args.file.read_bytes()[: args.max_bytes]
    model = _load_model(args)
    learning = _learning_config(args)
    results = [prequential(model, data, arm=arm, chunk_tokens=args.chunk, learning=learning) for arm in args.arms]
    if args.plot:
        plot_arms(results, args.plot, title=f"prequential bits per byte: {args.file.name}")
    summary = {
        "file": str(args.file),
        "bytes": len(data),
        "chunk_tokens": args.chunk,
        "learning": dataclasses.asdict(learning),
        "bits_per_byte": {r.arm: round(r.bits_per_byte, 4) for r in results},
    }
    if "static" in args.arms and "both" in args.arms:
        summary["both_over_static"] = round(
            results[args.arms.index("both")].bits_per_byte / results[args.arms.index("static")].bits_per_byte, 4
        )
    if args.json:
        print(json.dumps(summary))
    else:
        for result in results:
            print(f"{result.arm:>10}: {result.bits_per_byte:.4f} bits per byte")
        if args.plot:
            print(f"plot: {args.plot}")
    return 0


def _load_model(args: argparse.Namespace):
    from agent.demo import load_or_build

    return load_or_build(args.checkpoint, args.preset)


def _eval_passkey(args: argparse.Namespace) -> int:
    from learner.passkey import filler_pool, passkey_eval

    distances = [int(d) for d in args.distances.split(",")]
    trials = {d: (args.trials if d <= 65_536 else args.trials_long) for d in distances}
    modes = {"both": (True, False), "on": (True,), "off": (False,)}[args.retrieval]
    results = passkey_eval(
        _load_model(args),
        filler_pool(args.corpus),
        distances=distances,
        trials=trials,
        retrieval_modes=modes,
        seed=args.seed,
        question_step=args.question_step,
    )
    rows = [
        {
            "distance": r.distance,
            "retrieval": r.retrieval,
            "trials": r.trials,
            "accuracy": r.accuracy,
            "mixed_kinds": dict(zip(("recalled", "trials"), r.mixed)),
            "misses": [
                {"expected": e, "produced": p, "stated_in": stated, "asked_after": asked}
                for (e, p), (stated, asked) in zip(r.answers, r.contexts)
                if e != p
            ],
        }
        for r in results
    ]
    if args.plot:
        _plot_passkey(results, args.plot)
    if args.json:
        print(json.dumps({"question_step": args.question_step, "results": rows}))
    else:
        for row in rows:
            mode = "retrieval on " if row["retrieval"] else "retrieval off"
            mixed = row["mixed_kinds"]
            kinds = ""
            if mixed["trials"]:
                kinds = f"; stated and asked in different kinds of text: {mixed['recalled']} of {mixed['trials']}"
            print(f"{row['distance']:>9,} bytes  {mode}  {row['accuracy']:.2f} ({row['trials']} trials{kinds})")
    return 0


def _plot_passkey(results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    for retrieval in (True, False):
        points = [(r.distance, r.accuracy) for r in results if r.retrieval == retrieval]
        if not points:
            continue
        axes.plot(*zip(*points), marker="o", label="retrieval on" if retrieval else "retrieval off")
    axes.set_xscale("log")
    axes.set_xlabel("distance between passkey and question (bytes)")
    axes.set_ylabel("accuracy")
    axes.set_ylim(-0.05, 1.05)
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _eval_forgetting(args: argparse.Namespace) -> int:
    from learner.evaluate import forgetting

    stream = args.stream.read_bytes()[: args.max_bytes]
    learning = _learning_config(args)
    report = forgetting(_load_model(args), args.corpus, stream, learning=learning, max_bytes=args.heldout_bytes)
    if args.json:
        print(
            json.dumps(
                {
                    "stream": str(args.stream),
                    "bytes": len(stream),
                    "learning": dataclasses.asdict(learning),
                    "sources": report,
                }
            )
        )
    else:
        for source, row in report.items():
            print(f"{source:>14}: {row['before']:.4f} -> {row['after']:.4f} bits per byte (x{row['ratio']:.4f})")
    return 0


def _export(args: argparse.Namespace) -> int:
    from learner.export import export_checkpoint

    card = export_checkpoint(
        args.run,
        args.out,
        args.corpus,
        heldout_bytes=args.heldout_bytes,
        wall_seconds=args.wall_seconds,
        hardware=args.hardware,
        initialized_from=args.initialized_from,
    )
    print(
        json.dumps(card) if args.json else f"wrote {args.out} (held-out bits per byte: {card['heldout_bits_per_byte']})"
    )
    return 0


def _worker(args: argparse.Namespace) -> int:
    from memory.settings import Settings
    from workers.app import run_worker

    queues = {"queues": tuple(args.queues.split(","))} if args.queues else {}
    run_worker(Settings(), **queues, concurrency=args.concurrency, loglevel=args.loglevel, hostname=args.hostname)
    return 0


def _serve(args: argparse.Namespace) -> int:
    from agent.serve import serve
    from memory.settings import Settings

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

    corpus = commands.add_parser("corpus", help="the training corpus").add_subparsers(
        dest="corpus_command", required=True
    )
    build = corpus.add_parser("build", help="build the corpus from this machine's own text (no downloads)")
    build.add_argument("--out", type=Path, default=Path("data/corpus"), help="output directory (default: %(default)s)")
    build.add_argument("--seed", type=int, default=0, help="seed of the synthetic tasks")
    build.add_argument("--max-bytes-per-source", type=int, help="cap each source (for quick builds)")
    build.add_argument("--synthetic-train", type=int, help="synthetic training documents (default 4,000)")
    build.add_argument(
        "--synthetic-kinds", default="passkey,facts,repeat", help="comma-separated: passkey,facts,repeat,records"
    )
    build.add_argument(
        "--synthetic-min-distance", type=int, default=1_000, help="shortest statement-to-question gap, bytes"
    )
    build.add_argument("--json", action="store_true", help="print the manifest as one JSON object")
    build.set_defaults(handler=_corpus_build)

    train = commands.add_parser("train-base", help="train a base model on a built corpus (resumes from --out)")
    train.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    train.add_argument(
        "--out", type=Path, default=Path("runs/small"), help="checkpoints go here; an existing run resumes"
    )
    train.add_argument("--preset", default="small")
    train.add_argument("--steps", type=int, default=20_000)
    train.add_argument("--batch-size", type=int, default=8)
    train.add_argument("--chunk", type=int, default=512, help="tokens per stream per step")
    train.add_argument("--lr", type=float, default=2e-3)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", default="cpu")
    train.add_argument("--no-bf16", action="store_true", help="train in fp32")
    train.add_argument("--checkpoint-every", type=int, default=200)
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument(
        "--init", type=Path, help="start from this saved model's weights (fine-tuning) instead of scratch"
    )
    train.add_argument(
        "--train-only",
        action="append",
        metavar="PREFIX",
        help="only parameters whose names start with PREFIX learn (repeatable), e.g. blocks.5.",
    )
    train.add_argument(
        "--recall-weight",
        type=float,
        default=1.0,
        help="loss weight of the bytes a synthetic task's recall must produce (default 1: the plain mean)",
    )
    train.add_argument("--max-minutes", type=float, help="checkpoint and stop after this much wall time (resume later)")
    train.set_defaults(handler=_train_base)

    export = commands.add_parser("export-checkpoint", help="publish a run's latest checkpoint with a model card")
    export.add_argument("run", type=Path)
    export.add_argument("out", type=Path)
    export.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    export.add_argument("--heldout-bytes", type=int, default=65_536)
    export.add_argument("--wall-seconds", type=float, help="training wall time, if the run did not record it")
    export.add_argument(
        "--initialized-from", type=Path, help="the base a fine-tuning run started from, if not recorded"
    )
    export.add_argument("--hardware", help="where it trained (default: this machine)")
    export.add_argument("--json", action="store_true")
    export.set_defaults(handler=_export)

    evaluate = commands.add_parser("eval", help="evaluations").add_subparsers(dest="eval_command", required=True)
    stream = evaluate.add_parser("stream", help="prequential bits per byte over a text, four arms")
    stream.add_argument("file", type=Path)
    stream.add_argument(
        "--checkpoint", type=Path, help="a saved model directory (default: checkpoints/small if shipped)"
    )
    stream.add_argument("--preset", default="small")
    stream.add_argument("--chunk", type=int, default=512)
    stream.add_argument("--max-bytes", type=int, default=1 << 20)
    stream.add_argument(
        "--lr", type=float, help="online learning rate of the learning arms (default: LearningConfig's)"
    )
    stream.add_argument("--trainable", choices=["downstream", "all"], help="what learns (default: LearningConfig's)")
    stream.add_argument("--rule", choices=["normalized", "sgd"], help="online update rule (default: LearningConfig's)")
    stream.add_argument("--anchor", type=float, help="pull toward the base per step (default: LearningConfig's)")
    stream.add_argument(
        "--arms",
        nargs="+",
        default=["static", "retrieval", "learning", "both"],
        choices=["static", "retrieval", "learning", "both"],
    )
    stream.add_argument("--plot", type=Path, help="write a PNG of bits per byte against position")
    stream.add_argument("--json", action="store_true")
    stream.set_defaults(handler=_eval_stream)

    passkey = evaluate.add_parser("passkey", help="passkey recall against distance, retrieval on and off")
    passkey.add_argument("--corpus", type=Path, default=Path("data/corpus"), help="held-out filler comes from here")
    passkey.add_argument(
        "--checkpoint", type=Path, help="a saved model directory (default: checkpoints/small if shipped)"
    )
    passkey.add_argument("--preset", default="small")
    passkey.add_argument("--distances", default="1024,4096,16384,65536,1048576")
    passkey.add_argument("--trials", type=int, default=20, help="trials per distance up to 64K")
    passkey.add_argument("--trials-long", type=int, default=5, help="trials per distance beyond 64K")
    passkey.add_argument("--seed", type=int, default=0)
    passkey.add_argument(
        "--retrieval",
        choices=("both", "on", "off"),
        default="both",
        help="score with the memory on, off, or both (the same keys and filler either way)",
    )
    passkey.add_argument(
        "--question-step",
        action="store_true",
        help="read the question's last byte as a step of its own, once all before it is in memory "
        "(as serving reads a chat prompt); by default the question's chunk is read whole",
    )
    passkey.add_argument("--plot", type=Path)
    passkey.add_argument("--json", action="store_true")
    passkey.set_defaults(handler=_eval_passkey)

    forget = evaluate.add_parser("forgetting", help="held-out bits per byte per source before/after learning a stream")
    forget.add_argument("stream", type=Path, help="text of another domain to learn online")
    forget.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    forget.add_argument(
        "--checkpoint", type=Path, help="a saved model directory (default: checkpoints/small if shipped)"
    )
    forget.add_argument("--preset", default="small")
    forget.add_argument("--max-bytes", type=int, default=1 << 20)
    forget.add_argument("--heldout-bytes", type=int, default=65_536, help="held-out bytes scored per source")
    forget.add_argument("--lr", type=float, help="online learning rate (default: LearningConfig's)")
    forget.add_argument("--trainable", choices=["downstream", "all"], help="what learns (default: LearningConfig's)")
    forget.add_argument("--rule", choices=["normalized", "sgd"], help="online update rule (default: LearningConfig's)")
    forget.add_argument("--anchor", type=float, help="pull toward the base per step (default: LearningConfig's)")
    forget.add_argument("--json", action="store_true")
    forget.set_defaults(handler=_eval_forgetting)

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
