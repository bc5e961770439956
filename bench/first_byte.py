"""First byte of a reply to one long message on a new agent: `python -m bench.first_byte --json`.

The serving path in one process (`AgentRuntime.chat`, SQLite in a temporary directory, the default base), a new
session per message of `--sizes` bytes (the GPL's text), a one-token reply; each size twice, the second
reported (the first pays one-time costs).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from agent.runtime import AgentRuntime
from learner.base import default_base, load_base
from learner.eventlog import create_session
from memory.db import make_engine, make_session_factory
from memory.migrate import upgrade
from memory.schema import Agent
from memory.settings import Settings
from models import SamplingConfig
from workers.app import make_app

TEXT = Path("/usr/share/common-licenses/GPL-3")


def run(base: str, sizes: list[int]) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        upgrade(url)
        engine = make_engine(url)
        sessions = make_session_factory(engine)
        settings = Settings(data_dir=Path(tmp) / "data", database_url=url)
        with sessions.begin() as db:
            agent = Agent(name="reader", base_checkpoint=base, learning_settings={})
            db.add(agent)
            db.flush()
            agent_id = agent.id
        with sessions() as db:
            runtime = AgentRuntime(agent=db.get(Agent, agent_id), sessions=sessions, celery=make_app(settings),
                                   settings=settings)
        text = TEXT.read_bytes()
        rows = []
        for size in sizes:
            message = (text * (size // len(text) + 1))[:size]
            for _ in range(2):
                with sessions.begin() as db:
                    session_id = create_session(db, agent_id=agent_id).id
                turn = runtime.chat(session_id=session_id, content=message,
                                    sampling=SamplingConfig(temperature=0, max_tokens=1))
            rows.append({"bytes": size, "prompt_tokens": turn.prompt_tokens, "first_byte_ms": round(turn.first_byte_ms),
                         "bytes_per_s": round(size / turn.first_byte_ms * 1000)})
        engine.dispose()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--base", default=None, help="base model (default: the default base)")
    parser.add_argument("--sizes", default="1024,4096,8192", help="comma-separated message sizes in bytes")
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",")]
    if not TEXT.is_file() or min(sizes) < 1:
        parser.error(f"needs {TEXT} (Debian's base-files) and sizes of at least one byte")
    base = args.base or default_base()
    load_base(base)
    print(json.dumps({"base": base, "messages": run(base, sizes)}, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
