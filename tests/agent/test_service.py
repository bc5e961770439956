"""End to end through HTTP against real `lifelong serve` processes, on each deployment (see conftest)."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time

import httpx
import openai
import pytest
import torch
from langchain_core.messages import HumanMessage
from langchain_openai import ChatOpenAI
from sqlalchemy import select

from memory.db import make_engine
from memory.ids import split_ids
from memory.schema import StreamSession
from models import State
from models.retrieval import RetrievalState
from tests.agent.conftest import MAX_DOCUMENT_BYTES, MAX_MESSAGE_BYTES
from tests.agent.server import WAIT_S, Deployment, stream_message

LEARNING = {"learning_rate": 0.01}
TURNS = ["hello, who are you?", "tell me about the lighthouse", "and what did the keeper say?"]
DOCUMENT = b"".join(f"Line {i}: the keeper of the northern lighthouse logs ship number {i * 7919 % 10007}.\n".encode()
                    for i in range(500))  # ~36 KB


def new_agent(deployment: Deployment, name: str) -> tuple[int, str]:
    """(agent id, a key scoped to it)."""
    with deployment.client(deployment.admin_key) as admin:
        created = admin.post("/v1/agents", json={"name": name, "base_checkpoint": "preset:tiny", "learning": LEARNING})
        assert created.status_code == 201, created.text
        agent_id = created.json()["id"]
        key = admin.post("/v1/keys", json={"agent_id": agent_id, "name": f"{name}'s key"})
        assert key.status_code == 201 and key.json()["agent_id"] == agent_id
        return agent_id, key.json()["key"]


def new_session(client: httpx.Client, agent_id: int) -> int:
    response = client.post(f"/v1/agents/{agent_id}/sessions")
    assert response.status_code == 201, response.text
    return response.json()["id"]


def wait_learned(client: httpx.Client, agent_id: int) -> dict:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        agent = client.get(f"/v1/agents/{agent_id}").json()
        if agent["queue_lag"] == 0:
            return agent
        time.sleep(0.2)
    pytest.fail(f"agent {agent_id} still has events to learn after {WAIT_S}s")


def saved_state(deployment: Deployment, session_id: int) -> State:
    """As stored (compared as tensors: the blob's header order may differ from process to process)."""
    url = deployment.env.get("LIFELONG_DATABASE_URL") or f"sqlite:///{deployment.data_dir / 'lifelong.db'}"
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return State.from_bytes(
                connection.scalar(select(StreamSession.state).where(StreamSession.id == session_id))
            )
    finally:
        engine.dispose()


def test_chat_streams_and_a_restarted_server_continues_exactly(deployment):
    # Two identical agents told identical things: `twin` takes its last turn before the restart,
    # `ada` after it. Same weights, memories and state => same reply, same next-token distribution.
    (ada, ada_key), (twin, twin_key) = new_agent(deployment, "ada"), new_agent(deployment, "twin")
    with deployment.client(ada_key) as ada_client, deployment.client(twin_key) as twin_client:
        sessions = {ada: new_session(ada_client, ada), twin: new_session(twin_client, twin)}
        for seed, turn in enumerate(TURNS):
            replies = []
            for agent_id, client in ((ada, ada_client), (twin, twin_client)):
                text, done = stream_message(client, sessions[agent_id], turn, seed=seed, max_tokens=48)
                assert done["bytes_in"] == len(turn.encode()) and 1 <= done["bytes_out"] <= 48
                assert (
                    0 < done["first_byte_ms"] <= done["elapsed_ms"] and done["reply_event_id"] > done["user_event_id"]
                )
                replies.append(text)
                wait_learned(client, agent_id)
            assert replies[0] == replies[1]
        history = ada_client.get(f"/v1/sessions/{sessions[ada]}/messages", params={"limit": 4}).json()
        assert [m["role"] for m in history["data"]] == ["user", "assistant"] * 2 and history["next_cursor"]
        rest = ada_client.get(f"/v1/sessions/{sessions[ada]}/messages", params={"cursor": history["next_cursor"]})
        assert [m["content"] for m in rest.json()["data"]][0::2] == TURNS[2:]
        last = {"content": "one more thing", "seed": 7, "temperature": 1.0, "top_p": 1.0, "max_tokens": 64}
        twin_reply = twin_client.post(f"/v1/sessions/{sessions[twin]}/messages", json=last).json()

    deployment.restart_server()
    with deployment.client(ada_key) as ada_client:
        assert ada_client.get(f"/v1/sessions/{sessions[ada]}").json()["position"] > 0
        ada_reply = ada_client.post(f"/v1/sessions/{sessions[ada]}/messages", json=last).json()
    assert ada_reply["content"] == twin_reply["content"]
    assert ada_reply["weight_version"] == twin_reply["weight_version"] > 0
    # The state after the turn decides the next token's distribution: identical to the bit.
    ada_state, twin_state = saved_state(deployment, sessions[ada]), saved_state(deployment, sessions[twin])
    assert ada_state.position == twin_state.position
    for ada_layer, twin_layer in zip(ada_state.layers, twin_state.layers, strict=True):
        if isinstance(ada_layer, RetrievalState):  # pair ids are each agent's own: the same pairs, other rows
            assert torch.equal(ada_layer.recalled_ids >= 0, twin_layer.recalled_ids >= 0)
            assert torch.equal(split_ids(ada_layer.recalled_ids)[1], split_ids(twin_layer.recalled_ids)[1])
            ada_layer, twin_layer = ada_layer._replace(recalled_ids=None), twin_layer._replace(recalled_ids=None)
        assert all(a is b is None or torch.equal(a, b) for a, b in zip(ada_layer, twin_layer, strict=True))


def test_a_document_ingested_while_chatting_is_learned_and_its_memories_curated(deployment):
    agent_id, key = new_agent(deployment, "reader")
    with deployment.client(key) as client:
        session_id = new_session(client, agent_id)
        uploaded: dict = {}

        def body():
            for start in range(0, len(DOCUMENT), 4096):
                yield DOCUMENT[start : start + 4096]
                time.sleep(0.02)

        def upload():
            with deployment.client(key) as uploader:
                uploaded["response"] = uploader.post(
                    f"/v1/agents/{agent_id}/documents",
                    params={"name": "log.txt"},
                    content=body(),
                    headers={"Content-Type": "text/plain"},
                )

        thread = threading.Thread(target=upload)
        thread.start()
        started = time.monotonic()
        _text, _done = stream_message(client, session_id, "what is in the logbook?", seed=1, max_tokens=32)
        assert time.monotonic() - started < 30, "a chat turn waited on the document"
        thread.join()
        response = uploaded["response"]
        assert response.status_code == 202, response.text
        document = response.json()
        assert document["bytes_received"] == len(DOCUMENT) and document["name"] == "log.txt"
        assert document["status"] in ("queued", "learning", "learned")

        deadline = time.monotonic() + WAIT_S
        while (document := client.get(f"/v1/documents/{document['id']}").json())["status"] != "learned":
            assert document["status"] != "failed" and time.monotonic() < deadline, document
            time.sleep(0.3)
        assert document["bytes_learned"] == len(DOCUMENT)
        wait_learned(client, agent_id)

        # Provenance: document memories name the document; chat memories name the session and its events.
        from_document = client.get(
            f"/v1/agents/{agent_id}/memories", params={"document_id": document["id"], "limit": 500}
        ).json()["data"]
        assert from_document and all(m["document_id"] == document["id"] and m["event_id"] for m in from_document)
        assert sum(m["byte_end"] - m["byte_start"] for m in from_document) >= len(DOCUMENT) - 1
        from_chat = client.get(f"/v1/agents/{agent_id}/memories", params={"session_id": session_id}).json()["data"]
        assert from_chat and all(m["session_id"] == session_id and m["document_id"] is None for m in from_chat)
        one = client.get(f"/v1/memories/{from_document[0]['id']}").json()
        assert one["text"] and one["hit_count"] >= 0 and one["agent_id"] == agent_id

        query = {"query": DOCUMENT[:300].decode(), "top_k": 50}
        recalled = {
            hit["memory_id"] for hit in client.post(f"/v1/agents/{agent_id}/memories/recall", json=query).json()
        }
        document_ids = {m["id"] for m in from_document}
        assert recalled & document_ids
        deleted = client.delete(f"/v1/agents/{agent_id}/memories", params={"document_id": document["id"]}).json()
        assert deleted["deleted"] == len(document_ids) and deleted["job"]["status"] == "queued"  # weights=true
        recalled = {
            hit["memory_id"] for hit in client.post(f"/v1/agents/{agent_id}/memories/recall", json=query).json()
        }
        assert recalled and not recalled & document_ids  # chat memories remain recallable; the document's are gone
        assert client.get(f"/v1/memories/{from_document[0]['id']}").status_code == 404

        exported = client.get(f"/v1/agents/{agent_id}/memories/export")
        lines = exported.text.splitlines()
        assert exported.status_code == 200 and len(lines) == len(
            client.get(f"/v1/agents/{agent_id}/memories", params={"limit": 500}).json()["data"]
        )
        assert client.post(f"/v1/agents/{agent_id}/memories/import", content="\n".join(lines[:2])).json() == {
            "imported": 2
        }


def test_the_openai_client_streams_a_reply(deployment):
    _agent_id, key = new_agent(deployment, "oracle")
    client = openai.OpenAI(base_url=f"{deployment.url}/v1", api_key=key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="oracle", messages=[{"role": "user", "content": "hi"}], max_tokens=16, seed=3
    )
    session_id = int(raw.headers["X-Lifelong-Session"])
    assert raw.parse().choices[0].message.content
    stream = client.chat.completions.create(
        model="oracle",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "and now?"}],
        stream=True,
        max_tokens=24,
        seed=4,
        extra_headers={"X-Lifelong-Session": str(session_id)},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    with deployment.client(key) as http:
        assert http.get(f"/v1/sessions/{session_id}").json()["events"] == 4  # both turns in one session
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nobody", messages=[{"role": "user", "content": "hi"}])

    # What tools call first: the models this key may use, as OpenAI's model objects.
    assert [model.id for model in client.models.list()] == ["oracle"]
    assert client.models.retrieve("oracle").owned_by == "lifelong"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nobody")
    # The last chunk carries the usage when asked; counts are the model's tokens.
    chunks = list(client.chat.completions.create(model="oracle", messages=[{"role": "user", "content": "more"}],
                                                 stream=True, max_tokens=8, stream_options={"include_usage": True}))
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    # What an agent cannot do is refused, naming the field, in OpenAI's error shape.
    for unsupported in ({"n": 3}, {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
                        {"response_format": {"type": "json_object"}}, {"logprobs": True}):
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model="oracle", messages=[{"role": "user", "content": "hi"}],
                                           **unsupported)
        assert refused.value.param == next(iter(unsupported)) and refused.value.type == "invalid_request_error"

    async def through_the_async_client() -> tuple[str, str]:
        async with openai.AsyncOpenAI(base_url=f"{deployment.url}/v1", api_key=key, max_retries=0) as client:
            whole = await client.chat.completions.create(model="oracle", max_tokens=8,
                                                         messages=[{"role": "user", "content": "hi"}])
            pieces = [chunk.choices[0].delta.content or "" async for chunk in await client.chat.completions.create(
                model="oracle", max_tokens=8, stream=True, messages=[{"role": "user", "content": "again"}])]
            return whole.choices[0].message.content, "".join(pieces)

    assert all(asyncio.run(through_the_async_client()))

    # A widely used tool that speaks the protocol through its own package: LangChain's ChatOpenAI.
    chat = ChatOpenAI(model="oracle", base_url=f"{deployment.url}/v1", api_key=key, max_tokens=8, max_retries=0,
                      stream_usage=True)
    answer = chat.invoke([HumanMessage("hello")])
    assert answer.content and answer.usage_metadata["output_tokens"] > 0
    streamed = [piece.content for piece in chat.stream([HumanMessage("and now?")])]
    assert "".join(streamed)


def test_an_openai_client_sending_the_whole_history_holds_one_session(deployment):
    _agent_id, key = new_agent(deployment, "historian")
    client = openai.OpenAI(base_url=f"{deployment.url}/v1", api_key=key, max_retries=0)

    def call(messages: list[dict], **options) -> tuple[int, str, object]:
        raw = client.chat.completions.with_raw_response.create(model="historian", messages=messages, seed=1,
                                                               **{"max_tokens": 12, **options})
        completion = raw.parse()
        return int(raw.headers["X-Lifelong-Session"]), completion.choices[0].message.content, completion

    # What a chat front end sends: the whole conversation on every call, and no session id.
    said = ["My name is Quentin.", "What is my name?", "Thanks."]
    history: list[dict] = []
    sessions = []
    for message in said:
        history.append({"role": "user", "content": message})
        session_id, reply, _ = call(history)
        sessions.append(session_id)
        history.append({"role": "assistant", "content": reply})
    assert len(set(sessions)) == 1  # one session for the conversation, not one per call
    with deployment.client(key) as http:
        logged = http.get(f"/v1/sessions/{sessions[0]}/messages", params={"limit": 100}).json()["data"]
    assert [(m["role"], m["content"]) for m in logged] == [(m["role"], m["content"]) for m in history]

    # A history that matches no session (another front end's, or edited) is read in as a new session's turns.
    elsewhere = [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Hello"},
                 {"role": "assistant", "content": "Hi there"}, {"role": "user", "content": "Again?"}]
    session_id, reply, with_system = call(elsewhere)
    assert session_id not in sessions
    with deployment.client(key) as http:
        logged = http.get(f"/v1/sessions/{session_id}/messages", params={"limit": 100}).json()["data"]
    assert [(m["role"], m["content"]) for m in logged] == [
        *((m["role"], m["content"]) for m in elsewhere), ("assistant", reply)]
    # The system turn reached the prompt: the byte model's prompt is one token per byte, plus a turn's frame
    # (its role token and its end).
    _, _, without_system = call(elsewhere[1:])
    assert with_system.usage.prompt_tokens - without_system.usage.prompt_tokens == len("Answer in one word.") + 2

    # Another key sending the same history does not continue this key's conversation.
    with deployment.client(deployment.admin_key) as admin:
        other_key = admin.post("/v1/keys", json={"agent_id": _agent_id, "name": "second"}).json()["key"]
    other = openai.OpenAI(base_url=f"{deployment.url}/v1", api_key=other_key, max_retries=0)
    raw = other.chat.completions.with_raw_response.create(model="historian", messages=history[:3], max_tokens=4)
    assert int(raw.headers["X-Lifelong-Session"]) not in sessions

    # max_tokens counts the model's tokens, and usage agrees.
    for budget in (1, 5):
        _, reply, completion = call([{"role": "user", "content": "Tell me a long story."}], max_tokens=budget,
                                    temperature=0.0)
        assert completion.usage.completion_tokens <= budget
        if completion.choices[0].finish_reason == "length":
            assert completion.usage.completion_tokens == budget
    # The last message must be the user's, and roles are checked, each naming the message.
    with pytest.raises(openai.BadRequestError, match=r"messages\[1\]: the last message must be the user's"):
        call([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}])
    with pytest.raises(openai.BadRequestError, match=r"messages\[0\]: role 'tool'"):
        call([{"role": "tool", "content": "42", "tool_call_id": "x"}, {"role": "user", "content": "hi"}])


def test_an_agent_key_sees_nothing_of_another_agent(deployment):
    (owner, owner_key), (_, other_key) = new_agent(deployment, "owner"), new_agent(deployment, "other")
    with deployment.client(owner_key) as client, deployment.client(other_key) as other:
        session_id = new_session(client, owner)
        client.post(f"/v1/sessions/{session_id}/messages", json={"content": "a secret", "max_tokens": 8})
        document = client.post(f"/v1/agents/{owner}/documents", content=b"private notes " * 100).json()
        wait_learned(client, owner)
        memory_id = client.get(f"/v1/agents/{owner}/memories").json()["data"][0]["id"]
        for method, path in [
            ("GET", f"/v1/sessions/{session_id}"),
            ("GET", f"/v1/sessions/{session_id}/messages"),
            ("GET", f"/v1/memories/{memory_id}"),
            ("DELETE", f"/v1/memories/{memory_id}"),
            ("GET", f"/v1/documents/{document['id']}"),
            ("GET", f"/v1/agents/{owner}"),
            ("GET", f"/v1/agents/{owner}/memories"),
            ("GET", f"/v1/agents/{owner}/weights"),
        ]:
            assert other.request(method, path).status_code == 404, (method, path)
        assert other.post(f"/v1/sessions/{session_id}/messages", json={"content": "tell me"}).status_code == 404
        assert other.post(f"/v1/agents/{owner}/documents", content=b"x").status_code == 404
        assert (
            other.post(
                "/v1/chat/completions", json={"model": "owner", "messages": [{"role": "user", "content": "hi"}]}
            ).status_code
            == 404
        )
        assert other.post("/v1/keys", json={}).status_code == 403
        assert [a["name"] for a in other.get("/v1/agents").json()["data"]] == ["other"]
        assert client.get(f"/v1/memories/{memory_id}").status_code == 200  # still there


def _cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


def test_every_list_refuses_a_cursor_past_what_sql_holds(deployment):
    """One cursor codec for every list, bounded to 63-bit ids: a crafted one is a 422, never an overflow's 500."""
    agent_id, _ = new_agent(deployment, "paged")
    with deployment.client(deployment.admin_key) as admin:
        session_id = new_session(admin, agent_id)
        lists = ["/v1/agents", "/v1/keys", f"/v1/agents/{agent_id}/sessions", f"/v1/sessions/{session_id}/messages",
                 f"/v1/agents/{agent_id}/documents", f"/v1/agents/{agent_id}/memories", f"/v1/agents/{agent_id}/scores",
                 f"/v1/agents/{agent_id}/weights"]
        crafted = [_cursor(f"c:{2**63}"), _cursor(f"c:{2**64}"), _cursor(f"m:{2**64}"), _cursor("c:-1")]
        for path in lists:
            assert admin.get(path, params={"cursor": _cursor("c:1")}).status_code == 200, path  # a valid one
            for cursor in crafted:
                response = admin.get(path, params={"cursor": cursor})
                assert response.status_code == 422, (path, cursor, response.text)
                assert "cursor" in response.json()["error"]["message"]


def test_a_nul_in_a_name_or_search_term_is_a_422_naming_the_field(deployment):
    """PostgreSQL text cannot hold NUL: what reaches a text column or a query on one is refused by name
    (docs/API.md); a message may hold any Unicode, NUL included, and is kept byte for byte."""
    agent_id, key = new_agent(deployment, "nul")
    with deployment.client(key) as client, deployment.client(deployment.admin_key) as admin:
        refused = [
            (client.get(f"/v1/agents/{agent_id}/memories", params={"text": "a\x00b"}), "text"),
            (client.post(f"/v1/agents/{agent_id}/documents", params={"name": "a\x00b"}, content=b"hi"), "name"),
            (admin.post("/v1/keys", json={"agent_id": agent_id, "name": "a\x00b"}), "name"),
            (admin.post("/v1/agents", json={"name": "n2", "base_checkpoint": "preset:tiny\x00"}), "base_checkpoint"),
            (client.post("/v1/chat/completions", json={"model": "nul\x00", "messages": [
                {"role": "user", "content": "hi"}]}), "model"),
        ]
        for response, field in refused:
            assert response.status_code in (400, 422), (field, response.text)  # 400 on OpenAI's route
            assert field in response.json()["error"]["message"], (field, response.text)
        session_id = new_session(client, agent_id)
        turn = client.post(f"/v1/sessions/{session_id}/messages", json={"content": "nul \x00 inside", "max_tokens": 8})
        assert turn.status_code == 200, turn.text
        logged = client.get(f"/v1/sessions/{session_id}/messages").json()["data"][0]
        assert logged["content"] == "nul \x00 inside"
        wait_learned(client, agent_id)  # its memory's text holds U+FFFD for the NUL (PostgreSQL refuses NUL)
        texts = [m["text"] for m in client.get(f"/v1/agents/{agent_id}/memories").json()["data"]]
        assert texts and all("\x00" not in text for text in texts)
        assert client.get(f"/v1/agents/{agent_id}").json()["queue_lag"] == 0


def test_every_bad_input_gets_its_4xx(deployment):
    agent_id, key = new_agent(deployment, "strict")
    with (
        deployment.client(key) as client,
        deployment.client(None) as anonymous,
        deployment.client(deployment.admin_key) as admin,
    ):
        session_id = new_session(client, agent_id)
        messages = f"/v1/sessions/{session_id}/messages"
        json_headers = {"Content-Type": "application/json"}
        cases = [
            (anonymous.get("/v1/agents"), 401),
            (deployment.client("ll_wrong").get("/v1/agents"), 401),
            (client.get("/v1/sessions/999999"), 404),
            (client.get("/v1/documents/999999"), 404),
            (client.get("/v1/memories/999999"), 404),
            (client.get("/v1/agents/999999/memories"), 404),
            (client.get("/v1/nowhere"), 404),
            (client.post(messages, content=b'{"content": "unterminated', headers=json_headers), 422),
            (client.post(messages, content=b'{"content": "\xff\xfe"}', headers=json_headers), 422),
            (client.post(messages, content=b'{"content": "\\ud800"}', headers=json_headers), 422),
            (client.post(messages, json={"content": ""}), 422),
            (client.post(messages, json={"content": "hi", "max_tokens": 0}), 422),
            (client.post(messages, json={"content": "x" * (MAX_MESSAGE_BYTES + 1)}), 413),
            (
                client.post(
                    messages, content=b"{" + b" " * (7 * MAX_MESSAGE_BYTES + 20_000) + b"}", headers=json_headers
                ),
                413,
            ),
            (client.get(messages, params={"cursor": "not-a-cursor"}), 422),
            (client.post(f"/v1/agents/{agent_id}/documents", content=b""), 422),
            (
                client.post(
                    f"/v1/agents/{agent_id}/documents",
                    content=b'{"text": "ok"}\nnot json\n',
                    headers={"Content-Type": "application/x-ndjson"},
                ),
                422,
            ),
            (client.post(f"/v1/agents/{agent_id}/memories/import", content=b'{"format": 99}'), 422),
            (client.delete(f"/v1/agents/{agent_id}/memories"), 422),
            (client.post(f"/v1/agents/{agent_id}/memories/recall", json={"query": ""}), 422),
            (client.post(f"/v1/agents/{agent_id}/weights/rollback", json={"version": 12345}), 404),
            (
                client.post(
                    "/v1/chat/completions",
                    json={"model": "strict", "messages": [{"role": "system", "content": "no user here"}]},
                ),
                400,  # OpenAI's clients expect invalid input on its routes to be a 400
            ),
            (admin.post("/v1/agents", json={"name": "strict"}), 409),
            (admin.post("/v1/agents", json={"name": "x", "learning": {"nonsense": 1}}), 422),
            (admin.post("/v1/agents", json={"name": "y", "base_checkpoint": "/no/such/model"}), 422),
            (admin.post("/v1/agents", json={"name": "bad name!"}), 422),
            # Numbers past what SQL and torch hold are refused before they see them (each was a 500).
            (client.get("/v1/agents/18446744073709551616"), 422),
            (client.get("/v1/agents/0"), 422),
            (admin.get("/v1/agents", params={"cursor": "YzoxODQ0Njc0NDA3MzcwOTU1MTYxNg=="}), 422),
            (client.get(f"/v1/agents/{agent_id}/memories", params={"cursor": "bToxODQ0Njc0NDA3MzcwOTU1MTYxNg=="}), 422),
            (client.get(f"/v1/agents/{agent_id}/memories", params={"session_id": 2**64}), 422),
            (client.get(f"/v1/agents/{agent_id}/memories", params={"text": "x" * 5000}), 422),
            (client.post(f"/v1/agents/{agent_id}/documents", params={"name": "a\x00b"}, content=b"hi"), 422),
            (client.post(messages, json={"content": "hi", "seed": 2**64}), 422),
            (client.post("/v1/chat/completions", headers={"X-Lifelong-Session": str(2**64)},
                         json={"model": "strict", "messages": [{"role": "user", "content": "hi"}]}), 400),
            (client.post("/v1/chat/completions",
                         json={"model": "strict", "messages": [{"role": "user",
                                                                "content": [{"type": "text", "text": 5}]}]}), 400),
            (admin.post("/v1/agents", json={"name": "z", "learning": {"learning_rate": 1e308}}), 422),
            (admin.post("/v1/agents", json={"name": "w", "learning": {"learning_rate": "fast"}}), 422),
            *[(client.post(f"/v1/agents/{agent_id}/memories/import", content=line), 422)
              for line in (b"[1,2]", b"5", b"null", b'{"format": 1, "text": 5}', b"[" * 50_000 + b"]" * 50_000)],
            # A bad first line is answered as it arrives, whatever follows it (here 4 MB, streamed).
            (client.post(f"/v1/agents/{agent_id}/memories/import",
                         content=iter([b"not a memory\n", *[b"x" * (1 << 20)] * 4])), 422),
            (client.get(f"/v1/agents/{agent_id}", headers={"X-Padding": "p" * 100_000}), 431),
        ]
        for number, (response, status) in enumerate(cases):
            assert response.status_code == status, (number, response.status_code, response.text)
            error = response.json()["error"]
            assert error["code"] and error["message"], (number, response.text)
        # The codes docs/API.md names for these.
        codes = {
            "invalid_utf8": [client.post(messages, content=b'{"content": "\\ud800"}', headers=json_headers),
                             client.post(messages, content=b'{"content": "\xff"}', headers=json_headers)],
            "malformed_json": [client.post(messages, content=b"[" * 10_000 + b"]" * 10_000, headers=json_headers),
                               client.post(messages, content=b'{"content": "unterminated', headers=json_headers)],
        }
        for code, responses in codes.items():
            for response in responses:
                assert (response.status_code, response.json()["error"]["code"]) == (422, code), response.text

        # Extreme but valid sampling numbers sample greedily instead of failing.
        extreme = client.post(messages, json={"content": "hi", "temperature": 1e-300, "top_p": 5e-324, "max_tokens": 8})
        assert extreme.status_code == 200, extreme.text
        # A budget past the server's reply limit (256 bytes here, conftest) is cut to it.
        long = client.post(messages, json={"content": "go on", "max_tokens": 65_536, "temperature": 1.0})
        assert long.status_code == 200 and long.json()["bytes_out"] <= 256, long.text
        # The server's own admin key cannot be revoked through the API: the operator would be locked out.
        own = [key["id"] for key in admin.get("/v1/keys").json()["data"] if key["name"] == "admin"]
        refused = admin.delete(f"/v1/keys/{own[0]}")
        assert refused.status_code == 409 and "configured admin key" in refused.json()["error"]["message"]
        assert admin.get("/v1/agents").status_code == 200

        # An oversized streamed document (no Content-Length) stops at the limit: 413, recorded as failed.
        def too_much():
            for _ in range(MAX_DOCUMENT_BYTES // 10_000 + 2):
                yield b"y" * 10_000

        response = client.post(f"/v1/agents/{agent_id}/documents", content=too_much())
        assert response.status_code == 413, response.text
        agent = client.get(f"/v1/agents/{agent_id}").json()
        wait_learned(client, agent_id)  # nothing of it is left pending
        assert agent["queue_lag"] >= 0
        # Weight versions page newest first, every kept version once.
        versions, cursor = [], None
        while True:
            page = client.get(f"/v1/agents/{agent_id}/weights", params={"limit": 1, **({"cursor": cursor} if cursor
                                                                                       else {})}).json()
            versions += [version["version"] for version in page["data"]]
            if not (cursor := page["next_cursor"]):
                break
        assert versions and versions == sorted(set(versions), reverse=True)
        # No request above, nor in the other tests of this module, was answered with a 500.
        assert not [
            line
            for line in anonymous.get("/metrics").text.splitlines()
            if line.startswith("lifelong_http_requests_total") and 'status="5' in line
        ]
        assert json.loads(anonymous.get("/healthz").text) == {"status": "ok"}


def test_an_imported_models_agent_talks_in_its_format_and_refuses_what_it_cannot_spell(deployment, tmp_path):
    """A base named by path: a GGUF file (tiny random Llama, a vocabulary without byte 0x04)."""
    from tests.agent.test_pretrained_chat import gappy_gguf

    path = gappy_gguf(tmp_path)
    with deployment.client(deployment.admin_key) as admin:
        created = admin.post("/v1/agents", json={"name": "imported", "base_checkpoint": str(path)})
        assert created.status_code == 201, created.text
        agent_id = created.json()["id"]
        missing = admin.post("/v1/agents", json={"name": "nothing", "base_checkpoint": str(tmp_path / "none.gguf")})
        assert missing.status_code == 422 and "is not a model" in missing.text
        session_id = new_session(admin, agent_id)
        refused = admin.post(f"/v1/sessions/{session_id}/messages", json={"content": "a\u0004b"})
        assert refused.status_code == 422 and "cannot spell" in refused.text
        assert admin.get(f"/v1/sessions/{session_id}").json()["events"] == 0  # nothing was logged
        reply = admin.post(f"/v1/sessions/{session_id}/messages",
                           json={"content": "hello there", "max_tokens": 24, "seed": 1})
        assert reply.status_code == 200 and reply.json()["content"], reply.text
        completion = admin.post("/v1/chat/completions", headers={"X-Lifelong-Session": str(session_id)},
                                json={"model": "imported", "messages": [{"role": "user", "content": "and now?"}],
                                      "max_tokens": 24, "no_repeat_ngram": 3})
        assert completion.status_code == 200 and completion.json()["choices"][0]["message"]["content"]
        assert admin.get(f"/v1/sessions/{session_id}").json()["events"] == 4

        # What the worker learned of a document is searched by the memory layers, until it is deleted.
        planted = b"the lighthouse keeper counted seven ships at dawn"
        document = admin.post(f"/v1/agents/{agent_id}/documents", content=planted,
                              headers={"Content-Type": "text/plain"}).json()
        wait_learned(admin, agent_id)
        recalled = admin.post(f"/v1/agents/{agent_id}/memories/recall", json={"query": planted.decode()}).json()
        from_document = {m["id"] for m in admin.get(f"/v1/agents/{agent_id}/memories",
                                                    params={"document_id": document["id"]}).json()["data"]}
        assert from_document and recalled and any(hit["memory_id"] in from_document for hit in recalled)
        exported = [json.loads(line) for line in admin.get(f"/v1/agents/{agent_id}/memories/export").text.splitlines()]
        assert all(len(base64.b64decode(row["keys"])) > row["num_tokens"] * row["head_dim"] * 2 for row in exported)
        deleted = admin.delete(f"/v1/agents/{agent_id}/memories", params={"document_id": document["id"]}).json()
        assert deleted["deleted"] == len(from_document)
        recalled = admin.post(f"/v1/agents/{agent_id}/memories/recall", json={"query": planted.decode()}).json()
        assert not {hit["memory_id"] for hit in recalled} & from_document
