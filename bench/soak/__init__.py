"""A soak: a real deployment under mixed load and chaos, then an audit of its database: `python -m bench.soak --json`.

For `--duration-s` (600) `--clients` (16) threads drive `lifelong serve` over HTTP, each a seeded random mix
(`--seed`) of: chat turns through `POST /v1/sessions/{id}/messages` (streamed and not) and through the OpenAI
endpoint, document uploads, memory listings (following cursors) and deletes, forgetting a document, session or
event (memories, and weights by a forget job), creating and deleting agents, weight rollbacks, and the MCP tools
`remember` and `recall` over streamable HTTP at /mcp (the `mcp` SDK's own client). Replies are kept short
(`--max-tokens` 16) and the base small (`--base`, `preset:tiny`), so the run measures the service, not the model.

Meanwhile a chaos thread SIGKILLs a worker every `--kill-every-s` (60) and the server is restarted (SIGTERM, as a
service manager would) once, half way. Deployments (`--deployment`, both by default):
- embedded: SQLite, the SQL transport and the worker inside `serve`. The kill takes that worker (a solo Celery
  worker: tasks run in it), and the server starts a new one, whose start-up requeue resends what SQL shows pending;
- postgres: a fresh PostgreSQL database (created here, dropped after), Redis (`--redis-url`, flushed) and two
  `lifelong worker` processes; the kill takes a whole worker (its process group), which is then started again.

A request that fails to connect (the server restarting) is counted as a connection error, not as a 5xx, and
retried after a short pause. A failure inside a 200 (an SSE `error` event, an MCP tool's error carrying a 5xx) is
counted apart, as an in-band server fault. After the load, the workers drain (until no agent has a queue lag and
no forget job is active, at most `--drain-timeout-s`; sooner if SQL shows nothing left to learn while the API's
queue_lag stays up), the processes stop, and the database is audited directly: every event learned, failed or
forgotten; no memory of a deleted agent or of a forgotten event; no orphan rows; every document in a final status;
every forget job finished, and none failed; every message the API acknowledged in its session's log.

Prints one JSON object: per deployment, requests by status, the 5xx (target 0) with examples, connection errors,
latencies per operation, what the chaos did, the drain, the audit checks and the server logs' errors; and
`audit_ok`. The logs stay in the directory the report names.

Where each part lives: `__main__` (the options and the report), `run` (one deployment from start to audit),
`deployments` (the scratch database, Redis and the deployment's environment), `world` and `recorder` (what the
clients share and what they saw), `http_calls`, `mcp_calls` and `operations` (the clients), `chaos`, `drain`,
`audit` and `server_logs`.
"""
