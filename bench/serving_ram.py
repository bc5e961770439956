"""What a serving process holds as agents load: `python -m bench.serving_ram --json`.

`--agents` new agents (no memory) on `--base` in a temporary SQLite database, loaded one after the other into one
process the way the API loads them (`agent.runtime.Runtimes`: one serving copy per base, shared), or with
`--each` as separate runtimes each loading its own copy (how the API loaded them before); the process's resident
memory (VmRSS) before the first and after each, with the decode step left uncompiled. Linux only (/proc). Prints
one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
from pathlib import Path

from sqlalchemy import select

from agent.runtime import AgentRuntime, Runtimes
from bench.local_agent import local_agent
from memory.schema import Agent
from workers.app import make_app


def resident_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="smollm2-135m-instruct")
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--each", action="store_true", help="a serving copy per agent (as before it was shared)")
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    args = parser.parse_args(argv)
    if args.agents < 1:
        parser.error("--agents must be at least 1")
    os.environ["LIFELONG_COMPILED_DECODE"] = "false"  # the models' bytes, not a compile's working set
    with tempfile.TemporaryDirectory() as tmp, local_agent(Path(tmp), args.base, "agent-0") as local:
        with local.sessions.begin() as db:
            db.add_all(Agent(name=f"agent-{i}", base_checkpoint=args.base, learning_settings={})
                       for i in range(1, args.agents))
        with local.sessions() as db:
            agents = list(db.scalars(select(Agent).order_by(Agent.id)))
        runtimes = Runtimes(settings=local.settings, sessions=local.sessions, celery=make_app(local.settings))
        held, resident = [], [round(resident_mb())]
        for agent in agents:
            held.append(AgentRuntime(agent=agent, sessions=local.sessions, celery=make_app(local.settings),
                                     settings=local.settings) if args.each else runtimes.get(agent))
            gc.collect()
            resident.append(round(resident_mb()))
    report = {"base": args.base, "shared_serving_copy": not args.each, "resident_mb_before_and_after_each": resident}
    print(json.dumps(report) if args.json else json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
