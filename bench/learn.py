"""Online learning through the broker and a worker, against the same steps done bare:
`python -m bench.learn --json`.

A long stream of Python's own test suite (code the base never trained on) is uploaded as one
document (`DocumentUpload`, as the API receives one) to a real `lifelong worker` process on the
embedded deployment (SQLite + the SQL transport, in a temporary directory), with the shipped base
checkpoint. Measured: bytes/s from upload to "learned" (a learn task per 16 chunks, one committed
version per chunk: memories, stream state, weights, all in SQL); bytes/s of the same online steps
(same chunks, same learning rule, retrieval from the same kind of FAISS index in RAM) with no queue
and no SQL; the same model reading the same chunks as serving reads a prompt (`ratio_to_prefill`: learning
through the worker against reading); prequential bits per byte of the static and both (learning + retrieval) arms; and
forgetting: held-out base-data bits per byte with the weights the worker published, over those of
the base.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sqlalchemy import func, select

from agent.serving import ServingModel, load_serving_base
from bench.local_text import stdlib_text
from learner.base import learning_config, load_base
from learner.evaluate import bits_per_byte, heldout_bits_per_byte, prequential
from learner.online import Chunk, LearningConfig, OnlineLearner, stream_chunks
from memory.db import make_engine, make_session_factory
from memory.eventlog import create_session
from memory.ids import MAX_SPAN_TOKENS
from memory.index import IndexConfig
from memory.migrate import upgrade
from memory.schema import Agent, Document, Event
from memory.store import row_place
from memory.stream_format import EventReading
from memory.view import MemoryView
from models import RetrievedMemory
from settings import SHIPPED_CHECKPOINT, Settings
from workers.app import make_app
from workers.submit import DocumentUpload, submit_events

ROOT = Path(__file__).resolve().parent.parent


class RamMemory:
    """The worker's retrieval (the store's RAM view: FAISS index and fp16 pairs) with no SQL behind it.

    Exact search over a growing tensor (TensorMemory) would cost far more than the worker's IVF
    search past 8K pairs and make the comparison meaningless; this fills a memory.view.MemoryView
    as the worker's store does, and refits it when the store would (synchronously, as evaluations do).
    """

    def __init__(self, head_dim: int):
        self.view = MemoryView(head_dim, IndexConfig(), name="bench")
        self.next_id, self.next_token = 1, 0

    def add(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """One chunk's pairs, as the worker stores them: fp16 rows of one stream, token after token."""
        keys, values = keys.reshape(-1, keys.shape[-1]), values.reshape(-1, values.shape[-1])
        for start in range(0, keys.shape[0], MAX_SPAN_TOKENS):
            end = min(start + MAX_SPAN_TOKENS, keys.shape[0])
            self.view.add_row(
                self.next_id,
                _fp16(keys[start:end]),
                _fp16(values[start:end]),
                row_place(1, 1, None, self.next_token, self.next_token + end - start),
            )
            self.next_id, self.next_token = self.next_id + 1, self.next_token + end - start
        if self.view.needs_refit():
            self.view.refit()

    def search(self, queries: torch.Tensor, top_k: int) -> RetrievedMemory:
        return self.view.search(queries, top_k)

    def follow(self, ids: torch.Tensor) -> RetrievedMemory:
        return self.view.follow(ids)


def _fp16(pairs: torch.Tensor) -> np.ndarray:
    """(T, D) pairs as SQL stores them and the store reads them back (memory.pair_format): fp16."""
    return pairs.detach().to("cpu", torch.float16).numpy()


def document_chunks(model, data: bytes, chunk_bytes: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(inputs, targets) of each step, the tokens the worker reads for a document's chunk events
    (memory.stream_format)."""
    chunks, last = [], None
    for seq, start in enumerate(range(0, len(data), chunk_bytes)):
        event = Event(document_id=1, seq=seq, role="document", content=data[start : start + chunk_bytes],
                      byte_offset=start)
        tokens = EventReading.after(event, last, model.tokenizer).tokens
        chunks += stream_chunks(torch.tensor([tokens]), chunk_bytes)
        last = tokens[-1]
    return chunks


def bare_learning(base_spec: str, data: bytes, chunk_bytes: int, learning: LearningConfig) -> tuple[float, float]:
    """(bytes/s, prequential bits per byte) of the worker's online steps with no queue and no SQL."""
    model = load_base(base_spec)
    learner = OnlineLearner(model, learning)
    # An imported model's memory layers do not attend to memory by default (Settings.memory_attention).
    memory = None if model.capabilities.memory == "memory_layers" else RamMemory(model.config.head_dim)
    state, bits = model.init_state(1), 0.0
    chunks = document_chunks(model, data, chunk_bytes)
    started = time.perf_counter()
    for inputs, targets in chunks:
        step = learner.step(Chunk(inputs, targets, state), memory)
        state = step.state
        bits += step.loss * step.tokens / math.log(2)
        if memory is not None:
            memory.add(*step.memory_kv)
    return len(data) / (time.perf_counter() - started), bits / len(data)


@torch.inference_mode()
def prefill(base_spec: str, data: bytes, chunk_bytes: int) -> float:
    """Bytes/s of the same model reading the same chunks as a serving process reads a prompt (its serving
    weights, the last position's prediction only), carrying the state from chunk to chunk: what learning
    is measured against (reading speed at the same working context)."""
    model = load_serving_base(base_spec, "cpu").eval()
    chunks = document_chunks(model, data, chunk_bytes)
    state = model.init_state(1)
    started = time.perf_counter()
    for inputs, _ in chunks:
        state = model(inputs, state, last_only=True).state
    return len(data) / (time.perf_counter() - started)


def _wait(condition, what: str, worker: subprocess.Popen, limit_s: float = 1800.0) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        if worker.poll() is not None:
            raise RuntimeError(f"the worker exited ({worker.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up waiting for {what} after {limit_s}s")
        time.sleep(0.05)


def through_worker(base_spec: str, data: bytes, chunk_bytes: int, workdir: Path,
                   learning_settings: dict | None = None) -> dict:
    """Learn `data` as a document through a real worker, as an agent with `learning_settings` (the defaults
    without); returns speed, scores and the learned model."""
    env = {"LIFELONG_DATA_DIR": str(workdir), "LIFELONG_CHUNK_BYTES": str(chunk_bytes)}
    settings = Settings(data_dir=workdir, chunk_bytes=chunk_bytes)
    workdir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url)
    engine = make_engine(settings.resolved_database_url)
    sessions = make_session_factory(engine)
    app = make_app(settings)
    worker_env = {k: v for k, v in os.environ.items() if not k.startswith("LIFELONG_")} | env
    log = open(workdir / "worker.log", "wb")  # noqa: SIM115 - the worker writes to it until `finally` closes it
    worker = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "worker", "--concurrency=1", "--loglevel=WARNING"],
        cwd=ROOT,
        env=worker_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        with sessions.begin() as db:
            warmup = Agent(name="warm-up", base_checkpoint=base_spec)
            agent = Agent(name="bench", base_checkpoint=base_spec, learning_settings=learning_settings)
            db.add_all([warmup, agent])
            db.flush()
            warmup_session = create_session(db, agent_id=warmup.id).id
            agent_id, warmup_id = agent.id, warmup.id
        # A first task loads the base model in the worker's pool process; timing starts after it.
        submit_events(app, sessions, session_id=warmup_session, events=[("user", b"warm up")])
        _wait(lambda: _pending(sessions, warmup_id) == 0, "the warm-up task", worker)
        started = time.perf_counter()
        upload = DocumentUpload(app, sessions, agent_id=agent_id, chunk_bytes=chunk_bytes, name="stdlib.py")
        upload.write(data)
        document_id = upload.finish()
        _wait(lambda: _status(sessions, document_id) in ("learned", "failed"), "the document", worker)
        seconds = time.perf_counter() - started
        if _status(sessions, document_id) == "failed":
            raise RuntimeError(f"the worker failed the document; see {workdir / 'worker.log'}")
        with sessions() as db:
            bits = db.scalar(select(func.sum(Event.learned_bits)).where(Event.document_id == document_id))
            versions = db.scalar(select(func.count()).select_from(Event).where(Event.document_id == document_id))
        serving = ServingModel(sessions=sessions, agent_id=agent_id, base=load_base(base_spec))
        return {
            "bytes_per_s": len(data) / seconds,
            "seconds": seconds,
            "prequential_bpb": bits / len(data),
            "chunks": versions,
            "model": serving.current().model,
        }
    finally:
        os.kill(worker.pid, signal.SIGTERM)  # warm shutdown: the main process stops its pool
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        log.close()
        engine.dispose()


def _pending(sessions, agent_id: int) -> int:
    with sessions() as db:
        return db.scalar(
            select(func.count()).select_from(Event).where(Event.agent_id == agent_id, Event.learned_at.is_(None))
        )


def _status(sessions, document_id: int) -> str:
    with sessions() as db:
        return db.scalar(select(Document.status).where(Document.id == document_id))


def heldout(model, corpus: Path, max_bytes: int, fallback: bytes) -> dict[str, float]:
    """Held-out base-data bits per byte per source (the corpus's held-out split; stdlib text without it)."""
    if (corpus / "manifest.json").exists():
        return heldout_bits_per_byte(model, corpus, max_bytes=max_bytes)
    return {"stdlib-heldout": bits_per_byte(model, fallback)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=SHIPPED_CHECKPOINT)
    parser.add_argument("--base", default=None, help="a base spec instead (e.g. smollm2-135m-instruct)")
    parser.add_argument("--bytes", type=int, default=128 * 1024, help="length of the learned stream")
    parser.add_argument("--chunk", type=int, default=2048, help="bytes per chunk event (one step, one version)")
    parser.add_argument("--corpus", type=Path, default=ROOT / "data" / "corpus", help="held-out base data")
    parser.add_argument("--heldout-bytes", type=int, default=8192, help="held-out bytes per source")
    parser.add_argument("--settings", type=json.loads, default={},
                        help='the agent\'s learning settings, JSON (e.g. \'{"gate_every": 0}\'); the defaults without')
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    args = parser.parse_args(argv)

    data = stdlib_text(args.bytes, skip=4 << 20, tests=True)  # unseen in base training
    fallback = stdlib_text(args.heldout_bytes, skip=1 << 20)
    spec = args.base or str(args.checkpoint)
    imported = load_base(spec).capabilities.pretrained
    learning = learning_config(args.settings, imported=imported)  # what the worker uses
    prefill_bps = prefill(spec, data, args.chunk)
    bare_bps, bare_bpb = bare_learning(spec, data, args.chunk, learning)
    if imported:  # the same steps with nothing learned
        static = bare_learning(spec, data, args.chunk, LearningConfig(learning_rate=0.0))[1]
    else:
        static = prequential(load_base(spec), data, arm="static", chunk_tokens=args.chunk).bits_per_byte
    with tempfile.TemporaryDirectory() as tmp:
        worker = through_worker(spec, data, args.chunk, Path(tmp) / "data", args.settings or None)
    before = heldout(load_base(spec), args.corpus, args.heldout_bytes, fallback)
    after = heldout(worker["model"].eval(), args.corpus, args.heldout_bytes, fallback)
    forgetting = sum(after.values()) / sum(before.values())  # equal bytes per source: pooled bits ratio
    report = {
        "checkpoint": spec,
        "stream_bytes": len(data),
        "chunk_bytes": args.chunk,
        "chunks": worker["chunks"],
        "learning": dataclasses.asdict(learning),
        "learn_bytes_per_s": round(worker["bytes_per_s"], 1),
        "bare_train_bytes_per_s": round(bare_bps, 1),
        "ratio": round(worker["bytes_per_s"] / bare_bps, 3),
        "prefill_bytes_per_s": round(prefill_bps, 1),
        "ratio_to_prefill": round(worker["bytes_per_s"] / prefill_bps, 3),
        "prequential_bpb": {
            "static": round(static, 4),
            "both": round(bare_bpb, 4),
            "both_through_worker": round(worker["prequential_bpb"], 4),
        },
        "forgetting": round(forgetting, 4),
        "heldout_bpb": {
            source: {"before": round(before[source], 4), "after": round(after[source], 4)} for source in before
        },
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(report) if args.json else json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
