"""First byte of a reply to one long message on a new agent: `python -m bench.first_byte --json`.

The serving path in one process (`AgentRuntime.chat`, SQLite in a temporary directory, the default base), a new
session per message of `--sizes` bytes (the GPL's text), a one-token reply, once the decode step is compiled (when
it is); each size twice, the second reported (the first pays one-time costs): its first byte, and the whole turn
(the state saved with the reply).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from bench.local_agent import local_agent
from learner.base import default_base, load_base
from memory.eventlog import create_session
from models import SamplingConfig

TEXT = Path("/usr/share/common-licenses/GPL-3")


def run(base: str, sizes: list[int]) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp, local_agent(Path(tmp), base, "reader") as local:
        runtime, text, rows = local.runtime(), TEXT.read_bytes(), []
        runtime.serving.wait_for_decoder(timeout=600)  # its compile in the background would share the cores
        for size in sizes:
            message = (text * (size // len(text) + 1))[:size]
            for _ in range(2):
                with local.sessions.begin() as db:
                    session_id = create_session(db, agent_id=local.agent_id).id
                started = time.perf_counter()
                turn = runtime.chat(session_id=session_id, content=message,
                                    sampling=SamplingConfig(temperature=0, max_tokens=1))
                turn_ms = (time.perf_counter() - started) * 1000
            rows.append({"bytes": size, "prompt_tokens": turn.prompt_tokens, "first_byte_ms": round(turn.first_byte_ms),
                         "bytes_per_s": round(size / turn.first_byte_ms * 1000), "turn_ms": round(turn_ms)})
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
