"""Many agents with memory in one serving process: `python -m bench.many_agents --json`.

One agent's memory of `--bytes` of Python source is built as turns and learning leave it (`bench.memory_size`'s
database: `--database`, built there if it does not exist), then copied row for row into `--agents` agents of one
SQLite database (each with its own rows, ids and full-text entries). One process serves them the way the API does
(`agent.runtime.Runtimes`, the decode step compiled once and shared): each agent in turn is asked a question in a
new session (a reply of up to 16 tokens, greedy), first with its memory opened from SQL alone, then again with
every agent loaded; then, after the maintenance task's code wrote each a snapshot, in a process that keeps one
agent loaded at a time (`LIFELONG_MEMORY_RAM_BYTES` of one byte), so that each turn opens its agent's memory from
its snapshot. Reports each round's first byte (median and worst over the agents) and whole turn, the seconds
spent loading each agent, the memory's RAM (`MemoryStore.nbytes`), and the process's resident memory before the
first agent and once all are loaded. Linux only (/proc). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import insert, literal, select

from agent.runtime import Runtimes
from bench.local_agent import local_agent
from bench.memory_size import main as build_memory
from bench.serving_ram import resident_mb
from learner.base import default_base
from memory.eventlog import create_session
from memory.schema import Agent, Memory
from models import SamplingConfig
from workers.app import make_app

QUESTION = b"Which module of the standard library reads command-line arguments?"
# Every column of a memory row but its id and agent: a copy keeps the rest as it is.
COPIED = [column for column in Memory.__table__.columns if column.name not in ("id", "agent_id")]


def copy_memory(local, agents: int, base: str) -> list[int]:
    """`agents - 1` new agents, each with a copy of the memory rows of the database's agent that has some; all the
    agents' ids, that one first."""
    with local.sessions.begin() as db:
        source = db.scalar(select(Memory.agent_id).limit(1))
        if source is None:
            raise SystemExit("bench.many_agents: the database holds no memory")
        copies = [Agent(name=f"copy-{i}", base_checkpoint=base, learning_settings={}) for i in range(1, agents)]
        db.add_all(copies)
        db.flush()
        for agent in copies:
            db.execute(insert(Memory).from_select(
                ["agent_id", *[column.name for column in COPIED]],
                select(literal(agent.id), *COPIED).where(Memory.agent_id == source).order_by(Memory.id)))
        return [source, *[agent.id for agent in copies]]


def one_round(runtimes: Runtimes, local, agent_ids: list[int]) -> dict:
    """Each agent asked once in a new session: first byte, whole turn, and the seconds its load took."""
    first_bytes, turns, loads = [], [], []
    for agent_id in agent_ids:
        with local.sessions.begin() as db:
            agent = db.get(Agent, agent_id)
            db.expunge(agent)
            session_id = create_session(db, agent_id=agent_id).id
        started = time.perf_counter()
        runtime = runtimes.get(agent)
        loads.append(time.perf_counter() - started)
        started = time.perf_counter()
        turn = runtime.chat(session_id=session_id, content=QUESTION,
                            sampling=SamplingConfig(temperature=0, max_tokens=16))
        turns.append((time.perf_counter() - started) * 1000)
        first_bytes.append(turn.first_byte_ms)
    return {"first_byte_ms_median": round(statistics.median(first_bytes)),
            "first_byte_ms_worst": round(max(first_bytes)), "turn_ms_median": round(statistics.median(turns)),
            "load_s_median": round(statistics.median(loads), 2), "load_s_worst": round(max(loads), 2)}


def run(base: str, database: Path, agents: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp, local_agent(Path(tmp), base, "memory", copy_of=database) as local:
        agent_ids = copy_memory(local, agents, base)
        celery = make_app(local.settings)
        runtimes = Runtimes(settings=local.settings, sessions=local.sessions, celery=celery)
        first = _agents(local, agent_ids[:1])[0]
        runtimes.get(first).serving.wait_for_decoder(timeout=600)  # a compile would share the cores
        gc.collect()
        resident = [round(resident_mb())]
        report = {"agents": agents, "cold_from_sql": one_round(runtimes, local, agent_ids)}
        gc.collect()
        resident.append(round(resident_mb()))
        report["warm"] = one_round(runtimes, local, agent_ids)
        stores = [runtimes.get(db_agent) for db_agent in _agents(local, agent_ids)]
        tokens = sum(len(runtime.store) for runtime in stores)
        report["memory_ram_bytes_per_token"] = round(sum(runtime.store.nbytes for runtime in stores) / tokens, 1)
        report["stored_tokens_per_agent"] = tokens // agents
        for agent_id, runtime in zip(agent_ids, stores):
            runtime.store.save_snapshot(local.settings.snapshot_dir(agent_id))
        report["resident_mb_before_and_with_all_loaded"] = resident
        del stores, runtimes
        gc.collect()
        # A process that keeps one agent loaded at a time: each agent asked unloads the one before, so every turn
        # below opens its agent's memory from its snapshot (and SQL past it). The first agent, loaded to load the
        # base, goes last.
        one_at_a_time = local.settings.model_copy(update={"memory_ram_bytes": 1})
        fresh = Runtimes(settings=one_at_a_time, sessions=local.sessions, celery=celery)
        fresh.get(first).serving.wait_for_decoder(timeout=600)
        report["cold_from_snapshot"] = one_round(fresh, local, [*agent_ids[1:], agent_ids[0]])
    return report


def _agents(local, agent_ids: list[int]) -> list[Agent]:
    with local.sessions() as db:
        found = [db.get(Agent, agent_id) for agent_id in agent_ids]
        for agent in found:
            db.expunge(agent)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--base", default=None, help="base model (default: the default base)")
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--bytes", type=int, default=1 << 18, help="bytes of text in each agent's memory")
    parser.add_argument("--database", type=Path, default=None,
                        help="bench.memory_size's database of one memory: reused if it exists, else built there")
    args = parser.parse_args(argv)
    if args.agents < 1 or args.bytes < 4096:
        parser.error("--agents must be at least 1 and --bytes at least 4096")
    base = args.base or default_base()
    with tempfile.TemporaryDirectory() as tmp:
        database = args.database or Path(tmp) / "memory.db"
        if not database.exists():
            build_memory(["--json", "--bytes", str(args.bytes), "--formats", "searching", "--database", str(database),
                          *(["--base", base] if args.base else [])])
        report = {"base": base, "bytes_per_agent": args.bytes, **run(base, database, args.agents)}
    print(json.dumps(report, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
