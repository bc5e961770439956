"""`lifelong corpus build`, `train-base` and `export-checkpoint`: the native base model's data, training and
publication (no server involved). Each handler imports what it runs, so other commands start without torch."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


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


def register(commands: argparse._SubParsersAction) -> None:
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
