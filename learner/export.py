"""Publish a trained run as a shippable checkpoint: weights, config and a model card with measured figures."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import torch

from learner.evaluate import heldout_bits_per_byte
from models import HybridLM
from models.cpu import cpu_name


def export_checkpoint(run: Path, out: Path, corpus: Path, *, heldout_bytes: int = 65_536,
                      wall_seconds: float | None = None, hardware: str | None = None,
                      initialized_from: Path | None = None) -> dict:
    """Copy the latest checkpoint's model to `out` and write MODEL_CARD.md and card.json beside it."""
    run, out = Path(run), Path(out)
    latest = run / (run / "latest").read_text().strip()
    meta = json.loads((latest / "trainer.json").read_text())
    model = HybridLM.load(latest / "model").eval()
    model.save(out)
    heldout = heldout_bits_per_byte(model, corpus, max_bytes=heldout_bytes)
    manifest = json.loads((Path(corpus) / "manifest.json").read_text())
    config = meta["config"]
    trained_bytes = meta["step"] * config["batch_size"] * config["chunk_tokens"]
    card = {
        "preset": config["preset"],
        "parameters": model.num_params(),
        "steps": meta["step"],
        "batch": [config["batch_size"], config["chunk_tokens"]],
        "trained_bytes": trained_bytes,
        "wall_seconds": wall_seconds if wall_seconds is not None else round(meta.get("elapsed_seconds", 0.0)),
        "hardware": hardware or f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "heldout_bits_per_byte": {k: round(v, 4) for k, v in heldout.items()},
        "heldout_bytes_per_source": heldout_bytes,
        "final_train_loss_nats": meta["history"][-1]["loss"] if meta["history"] else None,
        "training_config": config,
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": [{k: s[k] for k in ("name", "licence", "origin", "included")} for s in manifest["sources"]],
    }
    parent = initialized_from or meta.get("initialized_from")
    if parent and (Path(parent) / "card.json").is_file():  # a fine-tuning run: keep the base's lineage
        base = json.loads((Path(parent) / "card.json").read_text())
        if base["steps"] == 0 and "fine_tuned_from" in base:  # the parent was a conversion: name what it converted
            base = base["fine_tuned_from"]
        card["fine_tuned_from"] = {
            k: base[k]
            for k in ("steps", "trained_bytes", "wall_seconds", "hardware", "heldout_bits_per_byte", "training_config")
            if k in base
        }
    (out / "card.json").write_text(json.dumps(card, indent=2))
    (out / "MODEL_CARD.md").write_text(_markdown(card))
    return card


def _final_loss(card: dict) -> str:
    loss = card["final_train_loss_nats"]
    return "none (no steps)" if loss is None else f"{loss} nats per byte"


def _lineage(card: dict) -> str:
    base = card.get("fine_tuned_from")
    if not base:
        return ""
    if card["steps"] == 0:
        return (
            f"- converted from a base of {base['steps']:,} steps ({base['trained_bytes']:,} bytes, "
            f"{base['wall_seconds']:,.0f} s on {base['hardware']}) with no gradient steps since: parameters "
            f"the base lacks keep their initial values (`Trainer.init_from`)\n"
        )
    only = card["training_config"].get("train_only")
    learned = f", learning only parameters under {', '.join(only)}" if only else ""
    recall_weight = card["training_config"].get("recall_weight", 1.0)
    learned += (
        f", the bytes a synthetic task's recall must produce weighing {recall_weight:g}x in the loss"
        if recall_weight != 1.0
        else ""
    )
    return (
        f"- fine-tuned from a base of {base['steps']:,} steps ({base['trained_bytes']:,} bytes, "
        f"{base['wall_seconds']:,.0f} s on {base['hardware']}); the steps above are the fine-tuning's{learned}\n"
    )


def _markdown(card: dict) -> str:
    rows = "\n".join(f"| {source} | {bpb:.3f} |" for source, bpb in card["heldout_bits_per_byte"].items())
    data = "\n".join(
        f"| {s['name']} | {s['licence']} | {s['origin']} | {'yes' if s['included'] else 'no'} |" for s in card["data"]
    )
    hours = card["wall_seconds"] / 3600
    # A converted checkpoint's own run read nothing: describe how its base was trained.
    batch = card["batch"]
    if card["steps"] == 0 and card.get("fine_tuned_from", {}).get("training_config"):
        trained = card["fine_tuned_from"]["training_config"]
        batch = [trained["batch_size"], trained["chunk_tokens"]]
    return f"""# lifelong base model: `{card["preset"]}`

{card["parameters"]:,} parameters (hybrid RG-LRU / local attention / retrieval attention, byte-level).
Trained with `lifelong train-base` on the corpus of `lifelong corpus build`, with
memory in the loop: {batch[0]} parallel streams of {batch[1]}-token chunks, state carried
across chunks, each stream retrieving from its own past.

- steps: {card["steps"]:,} ({card["trained_bytes"]:,} bytes read)
- wall time: {card["wall_seconds"]:,.0f} s ({hours:.2f} h) on {card["hardware"]}
- final training loss: {_final_loss(card)}
- exported: {card["exported_at"]}
{_lineage(card)}
## Held-out bits per byte (first {card["heldout_bytes_per_source"]:,} held-out bytes of each source, fresh stream)

| source | bits per byte |
|---|---|
{rows}

## Data

| source | licence | origin | included |
|---|---|---|---|
{data}

Training configuration: `card.json` beside this file.
"""
