"""Facts told together, asked one by one: `python -m bench.recall_notes --json`.

bench.recall tells each fact in a document of its own. People write notes of several facts: here each
document holds FACTS_PER_NOTE of bench.recall's statements, with `--distance` bytes of other documents
learned after the first note, and each of its facts is then asked in a new chat session (greedy, the
serving path, the recalled note on). Same process, database and counting as bench.recall; a note's
memories are deleted after its questions, so each note is the only one of its kind in memory. With each note in
memory, two of bench.recall's general questions are asked too ("What is the capital of France?"): a note about
something else must not get in their way.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from agent.runtime import AgentRuntime
from bench.recall import FACTS, GENERAL, _answered, _ask, _document, _learn, filler
from learner.base import default_base, load_base
from learner.learn import LearnerCache
from memory.admin import delete_memories
from memory.db import make_engine, make_session_factory
from memory.migrate import upgrade
from memory.schema import Agent
from settings import Settings
from workers.app import make_app

FACTS_PER_NOTE = 4
GENERAL_PER_NOTE = 2


def run(base: str, distance: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        upgrade(url)
        sessions = make_session_factory(make_engine(url))
        settings = Settings(data_dir=Path(tmp) / "data", database_url=url)
        with sessions.begin() as db:
            agent = Agent(name="notes", base_checkpoint=base, learning_settings={})
            db.add(agent)
            db.flush()
            agent_id = agent.id
        cache = LearnerCache(sessions)
        load_base(base)  # loaded once here, so the first answer's time is not the load's
        runtime, trials, general = None, [], []
        for start in range(0, len(FACTS), FACTS_PER_NOTE):
            facts = FACTS[start : start + FACTS_PER_NOTE]
            told = _document(sessions, agent_id, " ".join(statement for statement, _, _ in facts).encode())
            _learn(sessions, cache, agent_id, told)
            if start == 0 and distance:
                _learn(sessions, cache, agent_id, _document(sessions, agent_id, filler(distance)))
            if runtime is None:
                with sessions() as db:
                    runtime = AgentRuntime(agent=db.get(Agent, agent_id), sessions=sessions,
                                           celery=make_app(settings), settings=settings)
            for _, question, answer in facts:
                reply, _ = _ask(runtime, sessions, question)
                trials.append({"question": question, "answer": answer, "reply": reply,
                               "answered": _answered(answer, reply)})
            note = start // FACTS_PER_NOTE
            for question, answers in GENERAL[note * GENERAL_PER_NOTE : (note + 1) * GENERAL_PER_NOTE]:
                reply, _ = _ask(runtime, sessions, question)
                general.append({"question": question, "answer": answers[0], "reply": reply,
                                "answered": answers[0] in reply.lower()})
            with sessions.begin() as db:
                delete_memories(db, agent_id=agent_id, event_id=told)
        answered = sum(trial["answered"] for trial in trials)
        return {"base": base, "distance": distance, "facts_per_note": FACTS_PER_NOTE, "trials": len(trials),
                "answered": answered / len(trials), "replies": trials, "general_trials": len(general),
                "general_answered": sum(trial["answered"] for trial in general) / max(1, len(general)),
                "general_replies": general}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--base", default=None, help="base model (default: the default base)")
    parser.add_argument("--distance", type=int, default=4096, help="bytes of other documents after the first note")
    args = parser.parse_args(argv)
    result = run(args.base or default_base(), args.distance)
    if args.json:
        print(json.dumps(result))
    else:
        for trial in result["replies"] + result["general_replies"]:
            print(f"{'yes' if trial['answered'] else 'no ':3}  {trial['question']} -> {trial['reply'][:80]!r}")
        print(f"answered {result['answered']:.2f} of {result['trials']}, general questions "
              f"{result['general_answered']:.2f} of {result['general_trials']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
