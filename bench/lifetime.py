"""Does learning make an agent better or worse, on what it says? `python -m bench.lifetime --json`.

One agent per arm lives the same seeded life (bench.lifetime_script): chat sessions through the serving path
(greedy, the recalled note on), each turn learned as it comes, as an idle worker would (the learning step
itself, `learn_through`, in this process). At each checkpoint (`--checkpoints`, in user turns) the agent is
probed on a copy of its database, so that no probe is ever learned:
- plain: held-out plain questions answered (bench.talk's twenty, a new session each);
- in_session: four facts told in a conversation, asked back four to seven turns later;
- cross_session: the facts the life told so far, asked in new sessions (memory, not context);
- degenerate: replies of the probe conversation that open with an earlier reply's sentence, or repeat a
  4-gram three times;
- future_bpb: bits per byte of the life's next turns (what the user will say), read by the served weights as
  one document;
- future_chat_bpb: the same turns read as the model reads them in a chat (each a user's turn in the chat
  format: `learner.evaluate.user_turn_bits_per_byte`), which is what learning from chat turns learns.

Arms (`--arms`): `off` (learning rate 0: the same memory, static weights), `replies` (the agent's own replies
are targets too, as before 0.4), `told` (what it is told only: the default, adapters on an imported base),
`norms` (what it is told, learning the norm scales as imported bases did before adapters).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from agent.runtime import AgentRuntime
from bench.lifetime_script import PROBE_CONVERSATION, PROBE_QUESTIONS, life
from learner.base import default_base, load_base
from learner.evaluate import bits_per_byte, user_turn_bits_per_byte
from learner.gate import answered, degenerate
from learner.learn import LearnerCache, learn_through
from memory.db import make_engine, make_session_factory
from memory.eventlog import create_session
from memory.migrate import upgrade
from memory.schema import Agent
from models import SamplingConfig
from settings import Settings
from workers.app import make_app

ARMS = {"off": {"learning_rate": 0.0}, "replies": {"learn_from_replies": True}, "told": {},
        "norms": {"trainable": "downstream"}}
GREEDY = SamplingConfig(temperature=0.0, max_bytes=120)
FUTURE_TURNS = 24


class World:
    """A database, its data directory and a serving runtime of its one agent."""

    def __init__(self, root: Path, name: str, base: str | None = None, learning: dict | None = None,
                 copy_of: World | None = None) -> None:
        self.path = root / f"{name}.db"
        self.url = f"sqlite:///{self.path}"
        if copy_of is not None:
            with sqlite3.connect(copy_of.path) as source, sqlite3.connect(self.path) as target:
                source.backup(target)
        else:
            upgrade(self.url)
        self.engine = make_engine(self.url)
        self.sessions = make_session_factory(self.engine)
        self.settings = Settings(data_dir=root / f"{name}-data", database_url=self.url)
        if copy_of is None:
            with self.sessions.begin() as db:
                agent = Agent(name=name, base_checkpoint=base, learning_settings=learning)
                db.add(agent)
                db.flush()
        with self.sessions() as db:
            agent = db.query(Agent).one()
        self.agent_id = agent.id
        self.runtime = AgentRuntime(agent=agent, sessions=self.sessions, celery=make_app(self.settings),
                                    settings=self.settings)

    def new_session(self) -> int:
        with self.sessions.begin() as db:
            return create_session(db, agent_id=self.agent_id).id

    def say(self, session_id: int, text: str) -> tuple[str, int]:
        result = self.runtime.chat(session_id=session_id, content=text.encode(), sampling=GREEDY)
        return result.reply.decode("utf-8", errors="replace"), result.reply_event_id

    def close(self) -> None:
        self.engine.dispose()


def probe(world: World, root: Path, told: list[tuple[str, list[str]]], future: list[str]) -> dict:
    fork = World(root, f"probe-{time.monotonic_ns()}", copy_of=world)
    try:
        plain = [answered(fork.say(fork.new_session(), question)[0], answers) for question, answers in PROBE_QUESTIONS]
        session, replies, recalled = fork.new_session(), [], []
        for text, answers, _ in PROBE_CONVERSATION:
            reply = fork.say(session, text)[0]
            replies.append(reply)
            if answers is not None:
                recalled.append(answered(reply, answers))
        asked = [(question, fork.say(fork.new_session(), question)[0], answers) for question, answers in told]
        across = [answered(reply, answers) for _, reply, answers in asked]
        flags = degenerate(replies)
        served = fork.runtime.serving.current().model
        bpb = bits_per_byte(served, "\n".join(future).encode())
        chat_bpb = user_turn_bits_per_byte(served, [turn.encode() for turn in future])
        return {"plain": sum(plain) / len(plain), "in_session": sum(recalled) / len(recalled),
                "cross_session": sum(across) / len(across) if across else None,
                "degenerate": sum(flags) / len(flags), "future_bpb": round(bpb, 4),
                "future_chat_bpb": round(chat_bpb, 4),
                "conversation": replies, "cross_session_replies": [[question, reply] for question, reply, _ in asked]}
    finally:
        fork.close()


def run_arm(arm: str, base: str, turns: int, checkpoints: list[int], seed: int) -> dict:
    """One agent lives `turns` user turns of life `seed`, learning each turn as it comes; probed at `checkpoints`."""
    plan = [(number, session, text) for number, session in enumerate(life(turns + FUTURE_TURNS, seed))
            for text in session.turns]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        world = World(root, f"life-{arm}", base, ARMS[arm])
        cache = LearnerCache(world.sessions)
        results, session_ids, told, started = [], {}, [], time.monotonic()
        for done in range(turns + 1):
            if done:
                number, session, text = plan[done - 1]
                if number not in session_ids:
                    session_ids[number] = world.new_session()
                    told += session.facts
                _, reply_id = world.say(session_ids[number], text)
                learn_through(world.sessions, cache, agent_id=world.agent_id, event_id=reply_id)
            if done in checkpoints:
                future = [text for _, _, text in plan[done : done + FUTURE_TURNS]]
                result = {"turns": done, **probe(world, root, told, future)}
                result["elapsed_s"] = round(time.monotonic() - started, 1)
                shown = {k: v for k, v in result.items() if k != "conversation"}
                print(f"[lifetime] {arm} seed {seed}: {shown}", file=sys.stderr, flush=True)
                results.append(result)
        world.close()
    return {"arm": arm, "seed": seed, "checkpoints": results}


def medians(runs: list[dict]) -> dict:
    out: dict = {}
    for arm in sorted({run["arm"] for run in runs}):
        rows = [run["checkpoints"] for run in runs if run["arm"] == arm]
        out[arm] = []
        for index, first in enumerate(rows[0]):
            point = {"turns": first["turns"]}
            for key in ("plain", "in_session", "cross_session", "degenerate", "future_bpb", "future_chat_bpb"):
                values = [row[index][key] for row in rows if row[index][key] is not None]
                point[key] = statistics.median(values) if values else None
                point[f"{key}_range"] = [min(values), max(values)] if values else None
            out[arm].append(point)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--base", default=None, help="base model (default: the default base)")
    parser.add_argument("--turns", type=int, default=60, help="user turns in a life")
    parser.add_argument("--checkpoints", default="0,30,60", help="probe after this many user turns")
    parser.add_argument("--arms", default="off,replies,told", help=f"comma-separated, of {sorted(ARMS)}")
    parser.add_argument("--seeds", default="0", help="comma-separated life seeds")
    args = parser.parse_args(argv)
    arms = args.arms.split(",")
    unknown = sorted(set(arms) - set(ARMS))
    checkpoints = sorted({int(c) for c in args.checkpoints.split(",")})
    if unknown or not checkpoints or checkpoints[-1] > args.turns or checkpoints[0] < 0:
        parser.error(f"arms from {sorted(ARMS)} and checkpoints within 0..--turns, please (got {args.arms!r}, "
                     f"{args.checkpoints!r})")
    base = args.base or default_base()
    load_base(base)  # once, before any timing
    runs = [run_arm(arm, base, args.turns, checkpoints, int(seed)) for seed in args.seeds.split(",") for arm in arms]
    report = {"base": base, "turns": args.turns, "checkpoints": checkpoints, "seeds": args.seeds,
              "medians": medians(runs), "runs": runs}
    print(json.dumps(report, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
