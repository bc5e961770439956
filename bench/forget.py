"""Forgetting with weights against learning: `python -m bench.forget --json`.

An agent on the shipped `small` checkpoint (embedded SQLite in a temporary directory, the default learning
settings and chunk size) learns a document of `--forgotten-bytes` (64 KiB) and then `--later-bytes` of later
text (1 MiB), each as chunk events through the learner's exactly-once path (`learn_through`, one committed
version per chunk, as a worker runs it). Then the document is forgotten with weights (`forget_source`) and
its forget job runs to its publish (`run_forget_jobs`, as the `lifelong.forget` task runs it), re-learning
the later text. Measured: bytes/s of learning the later text, bytes/s of replaying it, their ratio, and the
time from the forget to the published version. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from sqlalchemy import select

from bench.local_text import stdlib_text
from learner.forget import forget_source
from learner.learn import LearnerCache, learn_through
from learner.replay import run_forget_jobs
from memory.db import make_engine, make_session_factory
from memory.eventlog import receive_document
from memory.migrate import upgrade
from memory.schema import Agent, ForgetJob
from memory.store import StoreConfig
from settings import SHIPPED_CHECKPOINT, Settings


def _document(sessions, agent_id: int, data: bytes, chunk_bytes: int, name: str) -> tuple[int, int]:
    """(document id, its last chunk event id), received whole."""
    with sessions.begin() as db:
        document_id, event_ids = receive_document(db, agent_id=agent_id, data=data, chunk_bytes=chunk_bytes,
                                                  name=name)
    return document_id, event_ids[-1]


def run(*, forgotten_bytes: int, later_bytes: int, workdir: Path) -> dict:
    settings = Settings(data_dir=workdir)
    upgrade(settings.resolved_database_url)
    engine = make_engine(settings.resolved_database_url)
    sessions = make_session_factory(engine)
    text = stdlib_text(forgotten_bytes + later_bytes, tests=True)  # code the base never trained on
    forgotten, later = text[:forgotten_bytes], text[forgotten_bytes : forgotten_bytes + later_bytes]
    with sessions.begin() as db:
        agent = Agent(name="bench", base_checkpoint=str(SHIPPED_CHECKPOINT), learning_settings={})
        db.add(agent)
        db.flush()
        agent_id = agent.id
    learn = {"chunk_tokens": settings.chunk_bytes, "keep_versions": settings.keep_versions,
             "keep_version_every": settings.keep_version_every}
    cache = LearnerCache(sessions, store_config=StoreConfig.serving(settings.memory_nprobe))
    document_id, last = _document(sessions, agent_id, forgotten, settings.chunk_bytes, "forgotten")
    learn_through(sessions, cache, agent_id=agent_id, event_id=last, **learn)
    _, last = _document(sessions, agent_id, later, settings.chunk_bytes, "later")
    started = time.perf_counter()
    learn_through(sessions, cache, agent_id=agent_id, event_id=last, **learn)
    learn_s = time.perf_counter() - started

    started = time.perf_counter()
    with sessions.begin() as db:
        job_id = forget_source(db, agent_id=agent_id, document_id=document_id, weights=True).job_id
    run_forget_jobs(sessions, cache, agent_id=agent_id, chunk_tokens=settings.chunk_bytes,
                    checkpoint_every_s=settings.forget_checkpoint_s)
    forget_s = time.perf_counter() - started
    with sessions() as db:
        job = db.scalar(select(ForgetJob).where(ForgetJob.id == job_id))
        result = {"status": job.status, "from_version": job.from_version, "events_replayed": job.events_done,
                  "bytes_replayed": job.bytes_done}
    engine.dispose()
    learn_rate, replay_rate = later_bytes / learn_s, result["bytes_replayed"] / forget_s
    return {
        "base": "small", "chunk_bytes": settings.chunk_bytes, "torch_threads": torch.get_num_threads(),
        "forgotten_bytes": forgotten_bytes, "later_bytes": later_bytes, **result,
        "learn_bytes_per_s": round(learn_rate, 1), "replay_bytes_per_s": round(replay_rate, 1),
        "replay_over_learning": round(replay_rate / learn_rate, 3), "forget_s": round(forget_s, 1),
        "learn_later_s": round(learn_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--forgotten-bytes", type=int, default=64 * 1024)
    parser.add_argument("--later-bytes", type=int, default=1024 * 1024)
    parser.add_argument("--json", action="store_true", help="print one JSON object (the only output there is)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-forget-") as workdir:
        print(json.dumps(run(forgotten_bytes=args.forgotten_bytes, later_bytes=args.later_bytes,
                             workdir=Path(workdir))))


if __name__ == "__main__":
    main()
