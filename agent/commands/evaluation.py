"""`lifelong eval stream|passkey|forgetting`: the native model's evaluations (bits per byte with and without
memory and learning, passkey recall against distance, forgetting). Each handler imports what it runs."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from learner.online import LearningConfig


def learning_options(parser: argparse.ArgumentParser) -> None:
    """The online learning settings an evaluation may override (each left out keeps LearningConfig's)."""
    parser.add_argument("--lr", type=float, help="online learning rate (default: LearningConfig's)")
    parser.add_argument("--trainable", choices=["downstream", "adapters", "all"],
                        help="what learns (default: LearningConfig's; adapters: imported models only)")
    parser.add_argument("--rule", choices=["normalized", "sgd"], help="online update rule (default: LearningConfig's)")
    parser.add_argument("--anchor", type=float, help="pull toward the base per step (default: LearningConfig's)")


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


def register(commands: argparse._SubParsersAction) -> None:
    evaluate = commands.add_parser("eval", help="evaluations").add_subparsers(dest="eval_command", required=True)
    stream = evaluate.add_parser("stream", help="prequential bits per byte over a text, four arms")
    stream.add_argument("file", type=Path)
    stream.add_argument(
        "--checkpoint", type=Path, help="a saved model directory (default: checkpoints/small if shipped)"
    )
    stream.add_argument("--preset", default="small")
    stream.add_argument("--chunk", type=int, default=512)
    stream.add_argument("--max-bytes", type=int, default=1 << 20)
    learning_options(stream)
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
    learning_options(forget)
    forget.add_argument("--json", action="store_true")
    forget.set_defaults(handler=_eval_forgetting)
