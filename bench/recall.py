"""Is a fact told to the agent recalled through chat, in the user's own words? `python -m bench.recall --json`.

For the default imported model (or `--base`), on an SQLite database in a temporary directory, through
the service's own code paths in one process (no HTTP, no broker): documents are logged and learned
by `learn_through` (the worker's function: it stores every memory layer's pairs), questions are
asked through `AgentRuntime.chat` (the serving path, default sampling but greedy for repeatability):
- each of 10 statements in a phrasing of its own (codes, passwords, names, addresses, dates; none of
  them "pass key") is told in a document of its own, with `distance` bytes of other documents
  (Debian's licence texts, repeated as needed) in memory, learned after the first statement and
  before the later ones; then a new chat session asks a natural question. It
  counts as answered when the reply holds the fact's answer. Memory off is the same agent asked
  after its memories were deleted (`memories forget`), so the two differ only by the memory.
- `memories recall` with the question: the rank of the statement's memory among those recalled.
- first byte of a chat reply (p50) with that memory in place, and the stored bytes per token.

The statement is the only one of its kind in memory during its trial: its rows are deleted after it.

Learning a megabyte of other documents takes over an hour on two cores; `--reuse DIR` keeps the
database as it stands once the first distance's documents are learned (before any question) and
starts from that copy on a later run with the same base, first distance and first fact.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from sqlalchemy import func, select
from sqlalchemy import text as sql

from agent.recall_note import RECALL_CANDIDATES, worth_noting
from agent.runtime import AgentRuntime
from bench.talk import FACTS as FACTS_ASKED
from learner.base import default_base, load_base
from learner.learn import LearnerCache, learn_through
from memory.admin import delete_memories
from memory.db import make_engine, make_session_factory
from memory.eventlog import append_document_chunks, create_session, finish_document, open_document
from memory.migrate import upgrade
from memory.recall import RecallHit, recall
from memory.schema import Agent, Event, Memory, StreamSession
from models import SamplingConfig
from settings import Settings
from workers.app import make_app

LICENCES = Path("/usr/share/common-licenses")
FILLER_FILES = ("GPL-3", "GFDL-1.3", "LGPL-2.1", "GPL-2", "MPL-2.0", "Apache-2.0", "LGPL-3", "Artistic")
# (statement, question, values): ten kinds of fact, each phrased its own way, each told with two values
# (two trials per phrasing, 20 per distance); the value is the answer.
PHRASINGS = [
    ("The vault combination is {}. Remember it.", "What is the vault combination?", ["5-2-6-0-1", "8-3-9-4-7"]),
    ("Our wifi password is {}.", "What is the wifi password?", ["tangerine42", "marmalade77"]),
    ("My sister's name is {}.", "What is my sister's name?", ["Oriane", "Ludmila"]),
    ("I live at {}, Paris.", "What is my address?", ["14 Rue Lamarck", "3 Rue Oberkampf"]),
    ("The launch date is {}.", "When is the launch date?", ["March 9, 2031", "October 17, 2029"]),
    ("The door code for the office is {}.", "What is the door code for the office?", ["7731", "4096"]),
    ("My dog is called {}.", "What is my dog called?", ["Pixel", "Biscuit"]),
    ("The meeting room is called {}.", "What is the meeting room called?", ["Aurora", "Halcyon"]),
    ("My favourite colour is {}.", "What is my favourite colour?", ["teal", "saffron"]),
    ("The project codename is {}.", "What is the project codename?", ["Bluefinch", "Ironbark"]),
]
# (statement, question, answer) of every trial; the answer counts when the reply holds its first word.
FACTS = [(statement.format(value), question, value) for variant in range(2)
         for statement, question, values in PHRASINGS for value in values[variant : variant + 1]]
GREEDY = SamplingConfig(temperature=0.0, max_bytes=120)
GENERAL = FACTS_ASKED[:10]  # bench.talk's questions with one-word answers


def filler(size: int) -> bytes:
    text = b"\n\n".join((LICENCES / name).read_bytes() for name in FILLER_FILES)
    return (text * (size // len(text) + 1))[:size]


def _document(sessions, agent_id: int, content: bytes, chunk_bytes: int = 4096) -> int:
    """Log a document as the upload path does; returns its last event id."""
    with sessions.begin() as db:
        document, stream = open_document(db, agent_id=agent_id, name="bench")
        chunks = [content[i : i + chunk_bytes] for i in range(0, len(content), chunk_bytes)]
        events = append_document_chunks(db, document_id=document.id, session_id=stream.id, chunks=chunks)
        finish_document(db, agent_id=agent_id, document_id=document.id)
        return events[-1].id


def _answered(answer: str, reply: str) -> bool:
    """The reply holds the answer's distinctive part: the answer up to its first comma ("March 9" of
    "March 9, 2031"), an address by its street name ("14" would match anything)."""
    key = answer.split(", ")[0].split(" ")[-1] if answer[0].isdigit() and " " in answer else answer.split(",")[0]
    return key.lower() in reply.lower()


def _ask(runtime: AgentRuntime, sessions, question: str) -> tuple[str, float]:
    with sessions.begin() as db:
        session_id = create_session(db, agent_id=runtime.agent_id).id
    result = runtime.chat(session_id=session_id, content=question.encode(), sampling=GREEDY)
    return result.reply.decode("utf-8", errors="replace"), result.first_byte_ms


def _recall(runtime: AgentRuntime, sessions, question: str) -> list[RecallHit]:
    """`memories recall` with the question: the memories its search ranks, best first."""
    runtime.store.catch_up()
    with sessions() as db:
        return recall(db, store=runtime.store, model=runtime.serving.current().model, text=question, limit=50)


def _learn(sessions, cache: LearnerCache, agent_id: int, event_id: int) -> None:
    """Learn through `event_id` (the trials' chat turns before it too, as a worker would), then delete
    the chat sessions' memories, so that no trial reads an earlier trial's questions and replies."""
    learn_through(sessions, cache, agent_id=agent_id, event_id=event_id, max_events=64)
    with sessions.begin() as db:
        chats = db.scalars(select(StreamSession.id).where(StreamSession.agent_id == agent_id,
                                                          StreamSession.kind == "chat")).all()
        for session_id in chats:
            delete_memories(db, agent_id=agent_id, session_id=session_id)


def _reused_copy(reuse: Path | None, base: str, distance: int, memory_attention: bool) -> Path | None:
    """Where the database learned up to `distance` is kept (see the module's docstring); None without --reuse.
    Memory attention changes what is learned, so it has copies of its own."""
    if reuse is None:
        return None
    attending = "-attending" if memory_attention else ""
    return reuse / f"{base.replace('/', '_')}-{distance}-{FACTS[0][2]}{attending}.db"


def run(base: str, distances: list[int], facts: int, memory_attention: bool, recall_in_context: bool,
        reuse: Path | None = None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        kept = _reused_copy(reuse, base, distances[0], memory_attention)
        reused = kept is not None and kept.exists()
        if reused:
            shutil.copyfile(kept, f"{tmp}/bench.db")
        upgrade(url)
        sessions = make_session_factory(make_engine(url))
        settings = Settings(data_dir=Path(tmp) / "data", database_url=url, memory_attention=memory_attention,
                            recall_in_context=recall_in_context)
        with sessions.begin() as db:
            agent = db.scalar(select(Agent).where(Agent.name == "recall")) if reused else None
            if agent is None:
                agent = Agent(name="recall", base_checkpoint=base, learning_settings={})
                db.add(agent)
                db.flush()
            agent_id = agent.id
        cache = LearnerCache(sessions, memory_attention=memory_attention)
        model = load_base(base)
        results: dict = {"base": base, "memory_layers": list(getattr(model.config, "memory_layers", ())),
                         "memory_attention": memory_attention, "recall_in_context": recall_in_context,
                         "distances": {}}
        learned_filler, runtime = 0, None
        for distance in distances:
            answered = {"memory": 0, "no_memory": 0}
            ranks, first_bytes, replies, noted = [], [], [], 0
            for statement, question, answer in FACTS[:facts]:
                if reused and learned_filler == 0:  # the first fact and the documents after it, learned before
                    with sessions() as db:
                        told = db.scalar(select(func.min(Event.id)).where(Event.content == statement.encode()))
                    learned_filler = distance
                else:
                    told = _document(sessions, agent_id, statement.encode())
                    _learn(sessions, cache, agent_id, told)
                if learned_filler < distance:  # the other documents learned since it was told
                    last = _document(sessions, agent_id, filler(distance - learned_filler))
                    _learn(sessions, cache, agent_id, last)
                    learned_filler = distance
                    if kept is not None and not kept.exists():
                        kept.parent.mkdir(parents=True, exist_ok=True)
                        with sessions() as db:  # a consistent copy, whatever the journal mode
                            db.execute(sql("VACUUM INTO :path"), {"path": str(kept)})
                with sessions() as db:
                    agent = db.get(Agent, agent_id)
                    told_rows = set(db.scalars(select(Memory.id).where(Memory.event_id == told)))
                if runtime is None:  # one serving process throughout: each turn catches up with SQL
                    runtime = AgentRuntime(agent=agent, sessions=sessions, celery=make_app(settings),
                                           settings=settings)
                reply, first_byte = _ask(runtime, sessions, question)
                hits = _recall(runtime, sessions, question)
                ranked = [hit.memory_id for hit in hits]
                ranks.append(next((i + 1 for i, row in enumerate(ranked) if row in told_rows), None))
                # Whether the statement was worth noting (the default serving path's choice).
                noted += any(hit.memory_id in told_rows for hit in
                             worth_noting(hits[:RECALL_CANDIDATES], question, settings.recall_min_score))
                first_bytes.append(first_byte)
                answered["memory"] += _answered(answer, reply)
                with sessions.begin() as db:
                    delete_memories(db, agent_id=agent_id, event_id=told)
                forgotten, _ = _ask(runtime, sessions, question)
                answered["no_memory"] += _answered(answer, forgotten)
                replies.append({"question": question, "memory": reply, "no_memory": forgotten,
                                "scores": [round(hit.score, 4) for hit in hits[:RECALL_CANDIDATES]]})
            with sessions() as db:
                stored_tokens = db.scalar(select(func.sum(Memory.num_tokens)).where(Memory.agent_id == agent_id))
                stored_bytes = db.scalar(select(func.sum(func.length(Memory.keys) + func.length(Memory.values)))
                                         .where(Memory.agent_id == agent_id))
            results["distances"][str(distance)] = {
                "answered_with_memory": answered["memory"] / facts,
                "answered_without_memory": answered["no_memory"] / facts,
                "recall_rank_first": sum(rank == 1 for rank in ranks) / facts,
                "recall_ranks": ranks,
                "noted": noted / len(FACTS[:facts]),
                "first_byte_ms_p50": statistics.median(first_bytes),
                "stored_tokens": stored_tokens,
                "stored_pair_bytes_per_token": (stored_bytes or 0) / max(1, stored_tokens or 0),
                "replies": replies,
            }
            # General questions with only the other documents in memory: does the memory get in the way?
            general = [answers[0] in _ask(runtime, sessions, question)[0].lower() for question, answers in GENERAL]
            results["distances"][str(distance)]["general_answered"] = sum(general) / len(GENERAL)
            # What a question about nothing stored recalls: the scores a note rule must not take for a find.
            results["distances"][str(distance)]["general_scores"] = [
                [round(hit.score, 4) for hit in _recall(runtime, sessions, question)[:RECALL_CANDIDATES]]
                for question, _ in GENERAL]
            print(json.dumps({"distance": distance, **{k: v for k, v in results["distances"][str(distance)].items()
                                                      if k != "replies"}}), file=sys.stderr)
        return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--base", default=None, help="base model (default: the default base)")
    parser.add_argument("--distances", default="4096,65536", help="bytes of other documents after each fact")
    parser.add_argument("--facts", type=int, default=len(FACTS))
    parser.add_argument("--memory-attention", action="store_true", help="memory layers attend to retrieved pairs")
    parser.add_argument("--no-recall-in-context", action="store_true", help="no recalled note before answering")
    parser.add_argument("--reuse", type=Path, default=None,
                        help="keep (or start from) the database learned up to the first distance in this folder")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    started = time.perf_counter()
    result = run(args.base or default_base(), [int(d) for d in args.distances.split(",")], args.facts,
                 args.memory_attention, not args.no_recall_in_context, args.reuse)
    result["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
