"""Which stored pairs the model's recall needs: `python -m bench.pair_formats --json`.

Twenty statements (bench.recall's facts) among `--bytes` of licence texts are read into one agent's memory as
fp16 pairs of every memory layer (`bench.service.build_history`, the way learning reads a stream). The same
rows are then opened by stores of other pair formats (memory.pair_format: a store reads rows of a format that
holds what it keeps as if written in its own), and each of bench.recall's ten questions is asked of
`memory.recall`: the rank of the first of its two statements in the model's own search (`model_search`) and
in the fused ranking with the words (`recall`). A format's figures: how often a statement ranks first, and the
model search's mean reciprocal rank.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile

from sqlalchemy import select

from bench.recall import FACTS, filler
from bench.service import build_history
from learner.base import default_base, load_base
from memory.db import make_engine, make_session_factory
from memory.eventlog import create_session
from memory.migrate import upgrade
from memory.pair_format import FULL_PAIRS, PairFormat
from memory.recall import model_search, recall
from memory.schema import Agent, Memory
from memory.store import MemoryStore

EVENT_BYTES = 2048


def formats(layers: int, kv_heads: int) -> dict[str, PairFormat]:
    """Every layer's pairs (the values read too), then keys-only int8 codes of the lowest n layers, and of each
    memory layer alone."""
    def keys(of: range) -> PairFormat:
        return PairFormat.keys8(tuple(c for layer in of for c in range(layer * kv_heads, (layer + 1) * kv_heads)))
    chosen = {"fp16_pairs": FULL_PAIRS}
    chosen.update({f"keys8_lowest_{n}": keys(range(n)) for n in range(1, min(layers, 4) + 1)})
    chosen.update({f"keys8_layer_{i}": keys(range(i, i + 1)) for i in range(layers)})
    return chosen


def run(base: str, size: int) -> dict:
    model = load_base(base)
    config = model.config
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/formats.db"
        upgrade(url)
        sessions = make_session_factory(make_engine(url))
        with sessions.begin() as db:
            agent = Agent(name="formats", base_checkpoint=base, learning_settings={})
            db.add(agent)
            db.flush()
            agent_id, session_id = agent.id, create_session(db, agent_id=agent.id, kind="stream").id
        # Each statement opens an event of its own (`build_history` reads 2 KB events), so one row holds it whole.
        per = max(1, round(size / len(FACTS) / EVENT_BYTES)) * EVENT_BYTES
        told_text = [statement.encode() + b"\n\n" for statement, _, _ in FACTS]
        text = b"".join(said + filler(per - len(said)) for said in told_text)
        build_history(url, agent_id=agent_id, session_id=session_id, base=base, data=text, event_bytes=EVENT_BYTES,
                      memory_attention=True)  # fp16 pairs of every layer: what every other format can be read from
        with sessions() as db:
            rows = db.execute(select(Memory.id, Memory.text)).all()
        told: dict[str, set[int]] = {}
        for statement, question, _ in FACTS:
            told.setdefault(question, set()).update(row.id for row in rows if statement in row.text)
        results = {}
        for name, pair_format in formats(len(config.memory_layers), config.num_kv_heads).items():
            store = MemoryStore(agent_id=agent_id, sessions=sessions, head_dim=config.head_dim,
                                channels=config.memory_channels, search_openings=config.memory_searches_openings,
                                pair_format=pair_format)
            store.rebuild()
            model_ranks, fused_ranks = [], []
            with sessions() as db:
                for question, statements in told.items():
                    searched = list(model_search(store=store, model=model, tokens=model.tokenizer.encode(
                        question.encode()), state=None, limit=50))
                    fused = [hit.memory_id for hit in recall(db, store=store, model=model, text=question, limit=50)]
                    model_ranks.append(next((i + 1 for i, m in enumerate(searched) if m in statements), None))
                    fused_ranks.append(next((i + 1 for i, m in enumerate(fused) if m in statements), None))
            questions = len(told)
            results[name] = {
                "pair_format": pair_format.name,
                "bytes_per_token": pair_format.bytes_per_token(config.memory_channels, config.head_dim),
                "model_first": sum(rank == 1 for rank in model_ranks) / questions,
                "model_mrr": round(sum(1 / rank for rank in model_ranks if rank) / questions, 3),
                "fused_first": sum(rank == 1 for rank in fused_ranks) / questions,
                "model_ranks": model_ranks, "fused_ranks": fused_ranks}
            print(json.dumps({name: {k: v for k, v in results[name].items() if not k.endswith("ranks")}}),
                  file=sys.stderr)
        return {"base": base, "bytes": size, "memory_layers": list(config.memory_layers), "formats": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--base", default=None, help="base model (default: the default base)")
    parser.add_argument("--bytes", type=int, default=1 << 18, help="bytes of other text among the statements")
    args = parser.parse_args(argv)
    if args.bytes < 0:
        parser.error("--bytes must be at least 0")
    print(json.dumps(run(args.base or default_base(), args.bytes), indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
