"""Schema-driven fuzzing of a real server: schemathesis' own runner (its coverage phase tries every
field's boundaries, its fuzzing phase random values, its stateful phase chains operations) reads
/openapi.json and sends what it generates. Whatever a request holds, no answer is a 5xx, its status
is one the document lists and its body the one it says.

On each deployment of the module (conftest: embedded, and PostgreSQL + Redis). Deterministic, so that a
clean clone passes or fails the same way every time: a fixed seed, one worker, FUZZ_EXAMPLES examples per
operation and phase (a count, not a time budget: a budget makes the cases depend on the machine's speed), and
no example database (schemathesis would otherwise replay a previous run's failures first). A longer,
randomized run under load is `python -m bench.soak`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from agent.app import create_app
from settings import Settings
from tests.agent.test_service import new_agent

EXAMPLES = os.environ.get("FUZZ_EXAMPLES", "10")
CHECKS = "not_a_server_error,status_code_conformance,response_schema_conformance"


def test_no_request_gets_a_server_error_or_an_undocumented_answer(deployment, tmp_path):
    new_agent(deployment, "fuzzed")  # something for the operations to find
    command = [str(Path(sys.executable).parent / "schemathesis"), "run", f"{deployment.url}/openapi.json",
               "--header", f"Authorization: Bearer {deployment.admin_key}", "--checks", CHECKS,
               "--max-examples", EXAMPLES, "--seed", "1", "--workers", "1", "--generation-database", "none",
               "--request-timeout", "60", "--no-color"]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.agent.fuzz_hooks"}
    run = subprocess.run(command, capture_output=True, text=True, env=env, cwd=Path(__file__).parents[2],
                         timeout=600)
    report = run.stdout[run.stdout.find("FAILURES"):] if "FAILURES" in run.stdout else run.stdout[-4000:]
    assert run.returncode == 0, report + run.stderr[-2000:]
    operations = sum(len(item) for item in create_app(Settings(), services=object()).openapi()["paths"].values())
    assert f"{operations} selected" in run.stdout  # every operation was fuzzed
