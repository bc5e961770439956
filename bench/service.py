"""The service end to end over HTTP: `python -m bench.service --json`.

Starts `lifelong serve` on the embedded defaults (SQLite, SQL transport, a worker inside) in a
temporary directory, with the shipped base checkpoint, and measures through real HTTP:
- chat first-byte latency (request sent to first SSE piece, client side) and reply bytes/s, in a
  fresh session and in one with `--history-bytes` of history and as many memory pairs. That history
  is built off the API (it would take hours of chat): logged as user events marked learned, read by
  the model once without sampling, its (key, value) pairs stored as memories, the state saved as a
  turn would save it;
- a document of `--ingest-bytes` through POST .../documents until learned, against the same online
  steps done bare (bench.learn.bare_learning: no HTTP, no queue, no SQL);
- `--concurrent` sessions chatting at once: errors and wall time;
- chat first byte in the fresh session while the worker learns another document of `--ingest-bytes`
  (`while_learning`; `learning_throughout` says the worker was still learning at the last turn).
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import torch
from sqlalchemy import update

from bench.deployment import Deployment, sse_events
from bench.learn import bare_learning
from bench.local_text import stdlib_text
from learner.base import learning_config, load_base
from memory.db import make_engine, make_session_factory
from memory.eventlog import append_events
from memory.pair_format import format_for
from memory.schema import Event, StreamSession
from memory.store import MemoryStore
from memory.stream_format import EventReading
from settings import SHIPPED_CHECKPOINT


def timed_turn(client: httpx.Client, session_id: int, content: str, max_tokens: int, seed: int) -> tuple[float, float]:
    """(first byte ms, reply bytes/s after the first byte), measured by the client."""
    started = time.perf_counter()
    first = None
    with client.stream("POST", f"/v1/sessions/{session_id}/messages",
                       json={"content": content, "stream": True, "max_tokens": max_tokens, "seed": seed}) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("event: piece") and first is None:
                first = time.perf_counter()
            if line.startswith("data: ") and '"bytes_out"' in line:
                bytes_out = json.loads(line.removeprefix("data: "))["bytes_out"]
        ended = time.perf_counter()
    return (first - started) * 1000, bytes_out / max(ended - first, 1e-9)


def chat_figures(client: httpx.Client, session_id: int, turns: int, max_tokens: int) -> dict:
    timed_turn(client, session_id, "warm up", max_tokens, 0)  # the agent's model and memory load here
    rows = [timed_turn(client, session_id, f"question {i}: what comes next?", max_tokens, i) for i in range(turns)]
    firsts = sorted(row[0] for row in rows)
    return {"first_byte_ms_p50": round(statistics.median(firsts), 1),
            "first_byte_ms_p99": round(firsts[min(len(firsts) - 1, round(0.99 * (len(firsts) - 1)))], 1),
            "bytes_per_s": round(statistics.median(row[1] for row in rows), 1)}


@torch.inference_mode()
def build_history(database_url: str, *, agent_id: int, session_id: int, base: str, data: bytes,
                  event_bytes: int = 2048, memory_attention: bool = False) -> None:
    """`data` as the session's history and the agent's memory, exactly as turns and learning would leave them
    (with the memory's pairs as `memory_attention` keeps them: memory.pair_format)."""
    sessions = make_session_factory(make_engine(database_url))
    model = load_base(base)
    if model.capabilities.windowed_state:
        model.cache_dtype = torch.bfloat16  # the state as serving saves it (agent.serving)
    store = MemoryStore(agent_id=agent_id, sessions=sessions, head_dim=model.config.head_dim,
                        channels=model.config.memory_channels,
                        pair_format=format_for(model.config, attends=memory_attention))
    state, last = model.init_state(1), None
    for start in range(0, len(data), 64 * event_bytes):
        with sessions.begin() as db:
            events = append_events(db, session_id=session_id, events=[
                ("user", data[i : i + event_bytes]) for i in range(start, min(len(data), start + 64 * event_bytes),
                                                                  event_bytes)])
            spans = []
            for event in events:
                reading = EventReading.after(event, last, model.tokenizer)
                out = model(torch.tensor([reading.tokens[:-1]]), state, None)
                state, last = out.state, reading.tokens[-1]
                spans += reading.memory_spans(0, out.memory_kv.keys[0], out.memory_kv.values[0], 0)
            db.execute(update(Event).where(Event.id.in_([e.id for e in events]))
                       .values(learned_at=datetime.now(UTC)))
            store.add_spans(spans, db=db)
    # The state has read every token but the last end-of-turn; a turn's state has read that too.
    state = model(torch.tensor([[last]]), state, None).state
    with sessions.begin() as db:
        db.execute(update(StreamSession).where(StreamSession.id == session_id)
                   .values(state=state.to_bytes(), position=state.position, events_read=events[-1].seq + 1))


def wait_until_learned(client: httpx.Client, agent_ids: list[int], timeout_s: float = 1800.0) -> float:
    """Seconds until no agent has events waiting to be learned (the chat turns' backlog)."""
    started = time.perf_counter()
    while any(client.get(f"/v1/agents/{agent_id}").json()["queue_lag"] for agent_id in agent_ids):
        if time.perf_counter() - started > timeout_s:
            raise RuntimeError(f"learning backlog not drained after {timeout_s:.0f} s")
        time.sleep(0.5)
    return time.perf_counter() - started


def ingest_figures(client: httpx.Client, agent_id: int, data: bytes, base: str, chunk_bytes: int) -> dict:
    started = time.perf_counter()
    document = client.post(f"/v1/agents/{agent_id}/documents", content=data,
                           headers={"Content-Type": "text/plain"}).json()
    while (document := client.get(f"/v1/documents/{document['id']}").json())["status"] != "learned":
        if document["status"] == "failed":
            raise RuntimeError(f"document failed: {document['failed_reason']}")
        time.sleep(0.5)
    http_rate = len(data) / (time.perf_counter() - started)
    bare_rate, _ = bare_learning(base, data, chunk_bytes, learning_config({}))
    return {"ingest_bytes": len(data), "ingest_bytes_per_s": round(http_rate, 1),
            "bare_learning_bytes_per_s": round(bare_rate, 1), "ingest_over_bare": round(http_rate / bare_rate, 3)}


def chat_while_learning(client: httpx.Client, agent_id: int, session_id: int, data: bytes, turns: int,
                        max_tokens: int) -> dict:
    """Chat turns timed while the worker learns a document (the two share the machine's cores)."""
    document = client.post(f"/v1/agents/{agent_id}/documents", content=data,
                           headers={"Content-Type": "text/plain"}).json()
    while (status := client.get(f"/v1/documents/{document['id']}").json()["status"]) not in ("learning", "learned"):
        if status == "failed":
            raise RuntimeError(f"document {document['id']} failed")
        time.sleep(0.2)
    figures = chat_figures(client, session_id, turns, max_tokens)
    status = client.get(f"/v1/documents/{document['id']}").json()["status"]
    # Turns timed after the learning ended would not measure what this is for.
    return {"while_learning": figures, "learning_throughout": status == "learning"}


def concurrent_figures(deployment: Deployment, key: str, agent_id: int, sessions: int, max_tokens: int) -> dict:
    errors: list[str] = []
    with deployment.client(key) as client:
        ids = [client.post(f"/v1/agents/{agent_id}/sessions").json()["id"] for _ in range(sessions)]

    def chat(session_id: int) -> None:
        try:
            with deployment.client(key) as client:
                with client.stream("POST", f"/v1/sessions/{session_id}/messages",
                                   json={"content": "hello", "stream": True, "max_tokens": max_tokens}) as response:
                    events = sse_events(response)
                if response.status_code != 200 or events[-1][0] != "done":
                    errors.append(f"{response.status_code} {events[-1:]}")
        except Exception as exc:  # counted, not raised
            errors.append(repr(exc))

    started = time.perf_counter()
    threads = [threading.Thread(target=chat, args=(i,)) for i in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"concurrent_sessions": sessions, "concurrent_errors": len(errors),
            "concurrent_wall_s": round(time.perf_counter() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=str(SHIPPED_CHECKPOINT), help="base checkpoint of the agents")
    parser.add_argument("--history-bytes", type=int, default=1 << 20)
    parser.add_argument("--ingest-bytes", type=int, default=1 << 20)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--concurrent", type=int, default=16)
    parser.add_argument("--chunk-bytes", type=int, default=2048)
    parser.add_argument("--worker-nice", type=int, default=None,
                        help="the embedded worker's niceness (LIFELONG_WORKER_NICE; default: the settings')")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="bench-service-"))
    env = {"LIFELONG_DATA_DIR": str(workdir / "data"), "LIFELONG_BASE_CHECKPOINT": args.base,
           "LIFELONG_CHUNK_BYTES": str(args.chunk_bytes), "LIFELONG_MAX_DOCUMENT_BYTES": str(4 * args.ingest_bytes)}
    if args.worker_nice is not None:
        env["LIFELONG_WORKER_NICE"] = str(args.worker_nice)
    deployment = Deployment("embedded", env, logs=workdir)
    database_url = f"sqlite:///{workdir / 'data' / 'lifelong.db'}"
    report: dict = {"base": args.base, "history_bytes": args.history_bytes, "turns": args.turns,
                    "max_tokens": args.max_tokens, "worker_nice": args.worker_nice}
    try:
        deployment.start()
        with deployment.client(deployment.admin_key) as admin:
            agents = {name: admin.post("/v1/agents", json={"name": name}).json()["id"]
                      for name in ("fresh", "long", "reader")}
            key = admin.post("/v1/keys", json={}).json()["key"]
        with deployment.client(key) as client:
            fresh = client.post(f"/v1/agents/{agents['fresh']}/sessions").json()["id"]
            report["history_0"] = chat_figures(client, fresh, args.turns, args.max_tokens)
            long = client.post(f"/v1/agents/{agents['long']}/sessions").json()["id"]
            started = time.perf_counter()
            build_history(database_url, agent_id=agents["long"], session_id=long, base=args.base,
                          data=stdlib_text(args.history_bytes))
            report["history_build_s"] = round(time.perf_counter() - started, 1)
            report["history_1m"] = chat_figures(client, long, args.turns, args.max_tokens)
            report["memory_count_long"] = client.get(f"/v1/agents/{agents['long']}").json()["memory_count"]
            report.update(concurrent_figures(deployment, key, agents["fresh"], args.concurrent, args.max_tokens))
            # The worker learns the chat turns above first; an ingest timed before that backlog
            # drains would measure it too.
            report["chat_backlog_drain_s"] = round(wait_until_learned(client, list(agents.values())), 1)
            report.update(ingest_figures(client, agents["reader"], stdlib_text(args.ingest_bytes, skip=1 << 22),
                                         args.base, args.chunk_bytes))
            report.update(chat_while_learning(client, agents["reader"], fresh,
                                              stdlib_text(args.ingest_bytes, skip=1 << 23), args.turns,
                                              args.max_tokens))
    finally:
        deployment.shutdown()
    print(json.dumps(report) if args.json else json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
