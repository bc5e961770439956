"""Conversations with an agent over HTTP, natively and through the openai client: `python -m bench.conversation`.

Starts `lifelong serve` on the embedded defaults (SQLite, SQL transport) in a temporary directory, once per
`--worker` setting: `running` (the worker inside `serve` learns each turn as it comes, beside the chat) and
`stopped` (`serve --no-worker` and a separate `lifelong worker`, stopped before the first turn: turns are logged
and queued, never learned). Each deployment holds bench.conversation_script's conversations (30 of 8-16 turns,
5 of `--long-turns`) with two agents, greedily, `--max-tokens` a reply:
- native: a session per conversation, each user turn streamed to `POST /v1/sessions/{id}/messages`;
- openai: the official `openai` client on `/v1`, streaming, the whole history each call and no session header;
  the agent's sessions are counted afterwards (one per conversation is the target, not one per call).
Per arm: told-fact recall in the session; plain-question accuracy in the conversations against the same
questions each asked in a fresh session (of the native agent, after its conversations); replies whose opening
sentence (learner.gate.opening) repeats an earlier reply's in the conversation; identity swaps
(bench.conversation_script.identity_swap); first byte p50 at user turns 16 and 100: the client's time from
sending the request to the first streamed text (an SSE `piece`, or the openai stream's first chunk with content).
Counts of openings and swaps are the short conversations'; the long ones' are under `*_long`.
Prints one JSON object (`--transcripts` adds every turn).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai

from bench.conversation_script import Conversation, conversations, identity_swap
from bench.deployment import Deployment
from learner.gate import answered, opening

ARMS = ("native", "openai")
WORKERS = ("stopped", "running")
TIMED_TURNS = (16, 100)  # user turns whose first byte is reported


@dataclass(frozen=True)
class Reply:
    text: str
    first_byte_ms: float | None  # None: the reply was empty


def native_turn(client: httpx.Client, session_id: int, content: str, max_tokens: int) -> Reply:
    started, first, pieces, event = time.perf_counter(), None, [], None
    with client.stream("POST", f"/v1/sessions/{session_id}/messages",
                       json={"content": content, "stream": True, "max_tokens": max_tokens,
                             "temperature": 0}) as response:
        if response.status_code != 200:
            raise RuntimeError(f"turn of session {session_id}: {response.status_code} {response.read()!r}")
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event == "piece":
                first = first or time.perf_counter()
                pieces.append(json.loads(line.removeprefix("data: "))["text"])
            elif line.startswith("data: ") and event == "error":
                raise RuntimeError(f"turn of session {session_id} failed: {line}")
    return Reply("".join(pieces), None if first is None else (first - started) * 1000)


def openai_turn(client: openai.OpenAI, model: str, history: list[dict], max_tokens: int) -> Reply:
    started, first, pieces = time.perf_counter(), None, []
    stream = client.chat.completions.create(model=model, messages=history, max_tokens=max_tokens, temperature=0,
                                            stream=True)
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            first = first or time.perf_counter()
            pieces.append(chunk.choices[0].delta.content)
    return Reply("".join(pieces), None if first is None else (first - started) * 1000)


def hold_native(client: httpx.Client, agent_id: int, conversation: Conversation, max_tokens: int) -> list[Reply]:
    session = client.post(f"/v1/agents/{agent_id}/sessions")
    session.raise_for_status()
    return [native_turn(client, session.json()["id"], turn.text, max_tokens) for turn in conversation.turns]


def hold_openai(client: openai.OpenAI, model: str, conversation: Conversation, max_tokens: int) -> list[Reply]:
    """As a chat front end does: the whole history every call, and nothing else naming the conversation."""
    history: list[dict] = []
    replies = []
    for turn in conversation.turns:
        history.append({"role": "user", "content": turn.text})
        replies.append(openai_turn(client, model, history, max_tokens))
        history.append({"role": "assistant", "content": replies[-1].text})
    return replies


def transcript(conversation: Conversation, replies: list[Reply]) -> list[dict]:
    """One row per turn: the reply, whether it answered, repeated an opening or swapped identities."""
    rows, seen, told = [], set(), []
    for number, (turn, reply) in enumerate(zip(conversation.turns, replies, strict=True), start=1):
        if turn.kind == "tell":
            told.append(turn)  # a reply claiming the fact just told counts too
        first = opening(reply.text)
        rows.append({"turn": number, "kind": turn.kind, "user": turn.text, "reply": reply.text,
                     "first_byte_ms": None if reply.first_byte_ms is None else round(reply.first_byte_ms, 1),
                     "correct": answered(reply.text, list(turn.answers)) if turn.answers else None,
                     "repeated_opening": bool(first) and first in seen,
                     "identity_swap": identity_swap(reply.text, told)})
        seen.add(first)
    return rows


def mean(values: list[bool]) -> float | None:
    return round(sum(values) / len(values), 3) if values else None


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def summary(rows: dict[str, list[dict]], fresh: dict[str, bool], elapsed_s: float) -> dict:
    every = [row for turns in rows.values() for row in turns]
    short = [row for name, turns in rows.items() if name.startswith("short") for row in turns]
    long = [row for name, turns in rows.items() if name.startswith("long") for row in turns]
    plain = [row for row in every if row["kind"] == "plain"]
    report = {"told_fact_recall": mean([row["correct"] for row in every if row["kind"] == "ask"]),
              "plain_in_session": mean([row["correct"] for row in plain]),
              "plain_fresh": mean([fresh[row["user"]] for row in plain]),
              "repeated_openings": sum(row["repeated_opening"] for row in short),
              "repeated_openings_long": sum(row["repeated_opening"] for row in long),
              "identity_swaps": sum(row["identity_swap"] for row in short),
              "identity_swaps_long": sum(row["identity_swap"] for row in long),
              "empty_replies": sum(not row["reply"] for row in every)}
    for number in TIMED_TURNS:
        times = [row["first_byte_ms"] for row in every if row["turn"] == number and row["first_byte_ms"] is not None]
        report[f"first_byte_ms_p50_turn{number}"] = median(times)
        report[f"first_byte_turns_at_{number}"] = len(times)
    report["first_byte_ms_p50"] = median([row["first_byte_ms"] for row in every if row["first_byte_ms"] is not None])
    report.update(turns=len(every), seconds=round(elapsed_s, 1), seconds_per_turn=round(elapsed_s / len(every), 2))
    return report


def targets(arms: dict[str, dict], sessions: int, conversations_held: int) -> dict[str, bool]:
    """The issue's targets; a metric with nothing to measure (None) misses."""
    def both(test) -> bool:
        return all(test(arm) for arm in arms.values())

    return {"told_fact_recall_0.8": both(lambda a: (a["told_fact_recall"] or 0) >= 0.8),
            "in_session_at_least_fresh": both(lambda a: a["plain_in_session"] is not None
                                              and a["plain_in_session"] >= a["plain_fresh"]),
            "no_repeated_openings": both(lambda a: a["repeated_openings"] == 0),
            "no_identity_swaps": both(lambda a: a["identity_swaps"] == 0),
            "one_openai_session_per_conversation": sessions == conversations_held}


def count_sessions(client: httpx.Client, agent_id: int) -> int:
    count, cursor = 0, None
    while True:
        page = client.get(f"/v1/agents/{agent_id}/sessions",
                          params={"limit": 500, **({"cursor": cursor} if cursor else {})}).json()
        count += len(page["data"])
        if not (cursor := page["next_cursor"]):
            return count


def hold_all(arm: str, hold: Callable[[Conversation], list[Reply]], script: list[Conversation],
             worker: str) -> tuple[dict[str, list[dict]], float]:
    rows, started = {}, time.perf_counter()
    for index, conversation in enumerate(script, start=1):
        began = time.perf_counter()
        rows[conversation.name] = transcript(conversation, hold(conversation))
        asks = [row["correct"] for row in rows[conversation.name] if row["kind"] == "ask"]
        print(f"[conversation] worker {worker}, {arm} {index}/{len(script)} {conversation.name}: "
              f"{len(conversation.turns)} turns, recalled {sum(asks)}/{len(asks)}, "
              f"{time.perf_counter() - began:.1f} s", file=sys.stderr, flush=True)
    return rows, time.perf_counter() - started


def fresh_answers(client: httpx.Client, agent_id: int, script: list[Conversation], max_tokens: int) -> dict[str, bool]:
    """Each distinct plain question of the script, asked alone in a new session."""
    questions = {turn.text: turn.answers for conversation in script for turn in conversation.turns
                 if turn.kind == "plain"}
    fresh = {}
    for question, answers in questions.items():
        session = client.post(f"/v1/agents/{agent_id}/sessions").json()["id"]
        fresh[question] = answered(native_turn(client, session, question, max_tokens).text, list(answers))
    return fresh


def run_setting(worker: str, script: list[Conversation], base: str | None, max_tokens: int,
                with_transcripts: bool) -> dict:
    """One deployment, both arms over the same conversations."""
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-conversation-{worker}-"))
    env = {"LIFELONG_DATA_DIR": str(workdir / "data"), **({"LIFELONG_BASE_CHECKPOINT": base} if base else {})}
    # Any name but "embedded" starts `serve --no-worker` and a separate worker, which "stopped" then stops.
    deployment = Deployment("embedded" if worker == "running" else "worker-stopped", env, logs=workdir)
    try:
        deployment.start()
        if worker == "stopped":
            os.killpg(deployment.worker.pid, signal.SIGTERM)
            deployment.worker.wait(timeout=60)
        with deployment.client(deployment.admin_key) as admin:
            agents = {arm: admin.post("/v1/agents", json={"name": f"conversation-{arm}"}).json() for arm in ARMS}
            keys = {arm: admin.post("/v1/keys", json={"agent_id": agents[arm]["id"]}).json()["key"] for arm in ARMS}
        rows: dict[str, dict[str, list[dict]]] = {}
        with deployment.client(keys["native"]) as native:
            rows["native"], native_s = hold_all("native", lambda c: hold_native(native, agents["native"]["id"], c,
                                                                                max_tokens), script, worker)
            started = time.perf_counter()
            fresh = fresh_answers(native, agents["native"]["id"], script, max_tokens)
            fresh_s = time.perf_counter() - started
        # No retries: a retried call could start a session of its own and blur the count.
        client = openai.OpenAI(base_url=f"{deployment.url}/v1", api_key=keys["openai"], max_retries=0, timeout=120)
        rows["openai"], openai_s = hold_all("openai", lambda c: hold_openai(client, agents["openai"]["name"], c,
                                                                            max_tokens), script, worker)
        with deployment.client(deployment.admin_key) as admin:
            sessions = count_sessions(admin, agents["openai"]["id"])
            states = {arm: admin.get(f"/v1/agents/{agents[arm]['id']}").json() for arm in ARMS}
    except BaseException:
        print(f"[conversation] the server's logs are kept in {workdir}", file=sys.stderr, flush=True)
        raise
    finally:
        deployment.shutdown()
    shutil.rmtree(workdir, ignore_errors=True)  # the logs are kept only for a failed run
    arms = {"native": summary(rows["native"], fresh, native_s), "openai": summary(rows["openai"], fresh, openai_s)}
    same = [a["reply"] == b["reply"] for name in rows["native"]
            for a, b in zip(rows["native"][name], rows["openai"][name], strict=True)]
    report = {**arms, "openai_sessions": sessions, "conversations": len(script),
              "openai_replies_same_as_native": mean(same), "fresh_questions": len(fresh),
              "fresh_seconds": round(fresh_s, 1),
              "agents_after": {arm: {"weight_version": states[arm]["weight_version"],
                                     "queue_lag": states[arm]["queue_lag"]} for arm in ARMS},
              "targets": targets(arms, sessions, len(script))}
    if with_transcripts:
        report["transcripts"] = rows
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--base", default=None, help="base model of the agents (default: the server's)")
    parser.add_argument("--conversations", type=int, default=30, help="short conversations (8-16 turns)")
    parser.add_argument("--long", type=int, default=5, help="long conversations")
    parser.add_argument("--long-turns", type=int, default=110, help="turns of a long conversation (at least 13)")
    parser.add_argument("--max-turns", type=int, default=None, help="cut every conversation to this many turns")
    parser.add_argument("--max-tokens", type=int, default=48, help="a reply's budget in the model's tokens")
    parser.add_argument("--worker", default="stopped,running", help=f"comma-separated, of {list(WORKERS)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--transcripts", action="store_true", help="add every turn's reply and scores")
    args = parser.parse_args(argv)
    workers = args.worker.split(",")
    if set(workers) - set(WORKERS) or args.long_turns < 13 or args.conversations < 0 or args.long < 0:
        parser.error(f"--worker from {list(WORKERS)}, --long-turns >= 13 (six facts, six questions, a thanks), "
                     f"counts >= 0, please (got {args.worker!r}, {args.long_turns})")
    script = conversations(args.conversations, args.long, args.long_turns, args.seed)
    if args.max_turns is not None:  # a short run's cut; a question always comes after its fact
        script = [Conversation(c.name, c.turns[: args.max_turns]) for c in script]
    report: dict = {"base": args.base, "conversations": args.conversations, "long": args.long,
                    "long_turns": args.long_turns, "max_turns": args.max_turns, "max_tokens": args.max_tokens,
                    "seed": args.seed}
    for worker in workers:
        report[f"worker_{worker}"] = run_setting(worker, script, args.base, args.max_tokens, args.transcripts)
    print(json.dumps(report, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
