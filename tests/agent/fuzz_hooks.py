"""schemathesis hooks for tests/agent/test_fuzz.py (loaded through SCHEMATHESIS_HOOKS by its CLI)."""

from __future__ import annotations

import json

import schemathesis

# Reply budgets a fuzzer picks (up to 64 KiB) would make every chat case a long generation; the
# budgets' bounds are checked by the schema and by tests/agent/test_service.py.
REPLY_BUDGET = 16


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value) -> bytes:
    """Memory imports: a list becomes one JSON line per item, anything else one line."""
    items = value if isinstance(value, list) else [value]
    return "\n".join(json.dumps(item) for item in items).encode()


@schemathesis.hook
def map_body(ctx, body):
    if isinstance(body, dict):
        for budget in ("max_tokens", "max_completion_tokens"):
            if isinstance(body.get(budget), int) and body[budget] > REPLY_BUDGET:
                body[budget] = REPLY_BUDGET
    return body
