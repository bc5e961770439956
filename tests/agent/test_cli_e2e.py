"""The CLI as a person uses it: real `lifelong` processes against a real `lifelong serve` on the embedded
defaults (SQLite, the SQL broker, the worker inside `serve`), configured only by LIFELONG_URL and
LIFELONG_API_KEY. The HTTP behaviour itself is test_service.py's; this checks that the two agree."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from bench.deployment import ROOT, WAIT_S, Deployment

# Newline-separated lines with a unique number each: a document memory's text is a slice of it.
DOCUMENT = b"".join(f"Entry {i}: the ferry to the island carries crate number {i * 613 % 997}.\n".encode()
                    for i in range(60))  # ~4 KB


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-e2e")
    # No LIFELONG_ADMIN_KEY: `serve` generates one under the data directory and says where.
    deployment = Deployment("embedded", {"LIFELONG_DATA_DIR": str(root / "data"),
                                         "LIFELONG_BASE_CHECKPOINT": "preset:tiny", "LIFELONG_CHUNK_BYTES": "1024"},
                            logs=root)
    try:
        deployment.start()
        yield deployment
    finally:
        deployment.shutdown()


def lifelong(server: Deployment, key: str, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    """`lifelong ARGS` as its own process; `ok`: it must exit 0 (else its output is the failure)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFELONG_")}
    env.update(LIFELONG_URL=server.url, LIFELONG_API_KEY=key, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-m", "agent.cli", *args], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=WAIT_S)
    if ok:
        assert result.returncode == 0, f"lifelong {' '.join(args)}: {result.returncode}\n{result.stdout}{result.stderr}"
    return result


def ndjson(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def one_line_error(result: subprocess.CompletedProcess[str], command: str, status: str) -> None:
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"lifelong {command}: {status} "), result.stderr


def test_a_person_chats_ingests_and_curates_memories_through_the_cli(server, tmp_path):
    # What `serve` printed: where the admin key is, and how to chat.
    served = (server.logs / "serve-0.log").read_text()
    assert f"admin key: {server.data_dir / 'admin.key'}" in served and "lifelong chat --agent" in served
    admin = server.admin_key

    agent = json.loads(lifelong(server, admin, "agents", "create", "ferry", "--base-checkpoint", "preset:tiny",
                                "--learning", '{"learning_rate": 0.01}', "--json").stdout)
    created = lifelong(server, admin, "keys", "create", "--agent", str(agent["id"]), "--name", "e2e")
    key = created.stdout.strip()  # the secret alone on stdout
    assert key.startswith("ll_") and "shown only once" in created.stderr
    agent_id = str(agent["id"])

    # Two streamed turns on one session: a new session, then resumed by its id.
    first = lifelong(server, key, "chat", "--agent", agent_id, "-m", "hello, ferry", "--seed", "1",
                     "--max-tokens", "24")
    session_id = re.search(r"session (\d+)", first.stderr).group(1)
    assert first.stdout.endswith("\n")
    header, turn = ndjson(lifelong(server, key, "chat", "--session", session_id, "-m", "which crate?", "--seed", "2",
                                   "--max-tokens", "24", "--json").stdout)
    assert header == {"session_id": int(session_id)}
    assert turn["user_event_id"] > 2 and turn["bytes_in"] == len("which crate?") and turn["bytes_out"] > 0
    assert turn["stop_reason"] in ("end_of_turn", "max_tokens", "max_bytes")
    assert turn["first_byte_ms"] <= turn["elapsed_ms"]

    path = tmp_path / "ferry.txt"
    path.write_bytes(DOCUMENT)
    document = json.loads(lifelong(server, key, "ingest", str(path), "--agent", agent_id, "--poll-s", "0.2",
                                   "--json").stdout)
    assert document["status"] == "learned" and document["bytes_learned"] == len(DOCUMENT)
    assert document["name"] == "ferry.txt"
    deadline = time.monotonic() + WAIT_S  # the chat turns are learned by the same worker, in order
    while json.loads(lifelong(server, key, "agents", "show", agent_id, "--json").stdout)["queue_lag"]:
        assert time.monotonic() < deadline, "the chat turns were never learned"
        time.sleep(0.3)

    # Provenance: memories from the document name it; memories from the chat name the session.
    memories = ndjson(lifelong(server, key, "memories", "list", "--agent", agent_id, "--limit", "1000",
                               "--json").stdout)
    from_document = [m for m in memories if m["document_id"] == document["id"]]
    from_chat = [m for m in memories if m["session_id"] == int(session_id)]
    assert from_document and from_chat and len(from_document) + len(from_chat) == len(memories)
    assert all(m["event_id"] and m["text"].encode() in DOCUMENT for m in from_document)
    assert all(m["document_id"] is None for m in from_chat)
    table = lifelong(server, key, "memories", "list", "--agent", agent_id, "--text", "crate number").stdout
    assert table.splitlines()[0].split()[:4] == ["id", "event_id", "document_id", "session_id"]

    query = DOCUMENT[:300].decode()
    document_ids = {m["id"] for m in from_document}
    recalled = ndjson(lifelong(server, key, "memories", "recall", "--agent", agent_id, query, "--top-k", "50",
                               "--json").stdout)
    assert {hit["memory_id"] for hit in recalled} & document_ids
    forgot = lifelong(server, key, "memories", "forget", "--agent", agent_id, "--document", str(document["id"]))
    # With the weights too (the default): the command follows the forget job to its publish.
    assert forgot.stdout.startswith(f"forgot {len(document_ids)} memories; weights: forget job ")
    assert " done, version " in forgot.stdout
    recalled = ndjson(lifelong(server, key, "memories", "recall", "--agent", agent_id, query, "--top-k", "50",
                               "--json").stdout)
    assert recalled and not {hit["memory_id"] for hit in recalled} & document_ids

    # Mistakes: the server's sentence on one line, a non-zero exit, no traceback.
    one_line_error(lifelong(server, admin, "agents", "create", "ferry", ok=False), "agents", "409")
    one_line_error(lifelong(server, key, "keys", "list", ok=False), "keys", "403")
    one_line_error(lifelong(server, key, "chat", "--session", "999999", "-m", "hi", ok=False), "chat", "404")
    missing = lifelong(server, key, "ingest", str(tmp_path / "nope.txt"), "--agent", agent_id, ok=False)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "nope.txt" in missing.stderr


def test_serve_starts_a_new_worker_when_its_worker_is_killed_and_the_work_still_gets_learned(server):
    import psutil

    def workers() -> list[int]:
        found = []
        for child in psutil.Process(server.server.pid).children():
            try:
                if "spawn_main" in " ".join(child.cmdline()):
                    found.append(child.pid)
            except psutil.NoSuchProcess:  # gone between the listing and the look: the killed worker, reaped
                pass
        return found

    with server.client(server.admin_key) as client:
        agent_id = client.post("/v1/agents", json={"name": "phoenix", "base_checkpoint": "preset:tiny"}).json()["id"]
        session_id = client.post(f"/v1/agents/{agent_id}/sessions", json={}).json()["id"]
        (victim,) = workers()
        os.kill(victim, signal.SIGKILL)
        # Sent while no worker runs (or while the old one's message is lost with it): the new one's start-up
        # requeue finds it pending in SQL.
        reply = client.post(f"/v1/sessions/{session_id}/messages", json={"content": "still here?", "max_tokens": 8})
        assert reply.status_code == 200, reply.text
        deadline = time.monotonic() + WAIT_S
        while (replacements := [pid for pid in workers() if pid != victim]) == [] or \
                client.get(f"/v1/agents/{agent_id}").json()["queue_lag"]:
            assert time.monotonic() < deadline, f"not learned after the kill; workers {workers()}, see {server.logs}"
            time.sleep(0.3)
        assert len(replacements) == 1 and client.get(f"/v1/agents/{agent_id}").json()["weight_version"] >= 1
    served = (server.logs / "serve-0.log").read_text()
    assert f"the learning worker (pid {victim}) exited with -9" in served
