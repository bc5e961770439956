"""The MCP server end to end, driven by the `mcp` SDK's own client against a real server (conftest: embedded,
and PostgreSQL + Redis): over streamable HTTP at /mcp, and over stdio through `lifelong mcp`."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.agent.test_service import new_agent

LIFELONG = str(Path(sys.executable).parent / "lifelong")
FACT = "The vault combination is 5-2-6-0-1. Remember it."


def over_http(deployment, key: str) -> Client:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=120)
    return Client(streamable_http_client(f"{deployment.url}/mcp", http_client=http))


def over_stdio(deployment, key: str) -> Client:
    return Client(StdioServerParameters(command=LIFELONG, args=["mcp", "--url", deployment.url, "--key", key]))


TRANSPORTS = {"http": over_http, "stdio": over_stdio}


def result_of(call) -> dict | list:
    assert not call.is_error, call.content
    structured = call.structured_content
    return structured["result"] if set(structured) == {"result"} else structured


def error_of(call) -> str:
    assert call.is_error, call
    return call.content[0].text


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_remember_recall_chat_and_forget_through_mcp(deployment, transport):
    agent_id, key = new_agent(deployment, f"mcp-{transport}")

    async def session():
        async with TRANSPORTS[transport](deployment, key) as client:
            assert {tool.name for tool in (await client.list_tools()).tools} == {"remember", "recall", "forget", "chat"}
            templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
            assert templates == {"lifelong://agents/{agent_id}/memories", "lifelong://memories/{memory_id}"}

            document = result_of(await client.call_tool("remember", {"agent_id": agent_id, "text": FACT}))
            assert document["status"] == "learned" and document["bytes_learned"] == len(FACT)

            hits = result_of(await client.call_tool("recall", {"agent_id": agent_id, "query": "The vault combination"}))
            assert hits[0]["document_id"] == document["id"] and "5-2-6-0-1" in hits[0]["text"]
            memory_id = hits[0]["memory_id"]

            listed = json.loads((await client.read_resource(f"lifelong://agents/{agent_id}/memories")).contents[0].text)
            assert memory_id in [memory["id"] for memory in listed]
            one = json.loads((await client.read_resource(f"lifelong://memories/{memory_id}")).contents[0].text)
            assert (one["text"], one["document_id"], one["agent_id"]) == (hits[0]["text"], document["id"], agent_id)

            first = result_of(await client.call_tool("chat", {"agent_id": agent_id, "message": "Hello there."}))
            again = result_of(await client.call_tool(
                "chat", {"agent_id": agent_id, "message": "And again.", "session_id": first["session_id"]}))
            assert again["session_id"] == first["session_id"] and isinstance(again["reply"], str)

            forgot = result_of(await client.call_tool("forget", {"agent_id": agent_id, "document_id": document["id"]}))
            assert forgot["deleted"] >= 1 and forgot["job"]["status"] in ("queued", "replaying", "done")
            hits = result_of(await client.call_tool("recall", {"agent_id": agent_id, "query": "The vault combination"}))
            assert document["id"] not in [hit["document_id"] for hit in hits]
            return first["session_id"], document["id"]

    session_id, document_id = asyncio.run(session())
    with deployment.client(key) as api:  # what the tools did is what the API shows
        messages = api.get(f"/v1/sessions/{session_id}/messages").json()["data"]
        assert [m["content"] for m in messages if m["role"] == "user"] == ["Hello there.", "And again."]
        assert api.get(f"/v1/agents/{agent_id}/memories", params={"document_id": document_id}).json()["data"] == []


def test_an_agent_key_reaches_only_its_agent_through_mcp(deployment):
    (owner, owner_key), (other, other_key) = new_agent(deployment, "mcp-owner"), new_agent(deployment, "mcp-other")
    with deployment.client(owner_key) as api:
        api.post(f"/v1/agents/{owner}/documents", content=FACT.encode()).raise_for_status()

    async def attempts():
        async with over_http(deployment, owner_key) as client:
            owned = result_of(await client.call_tool("remember", {"agent_id": owner, "text": "Mine, and learned."}))
            hits = result_of(await client.call_tool("recall", {"agent_id": owner, "query": "Mine"}))
            memory_id = hits[0]["memory_id"]
        async with over_http(deployment, other_key) as client:
            refused = [
                error_of(await client.call_tool("recall", {"agent_id": owner, "query": "The vault"})),
                error_of(await client.call_tool("remember", {"agent_id": owner, "text": "planted"})),
                error_of(await client.call_tool("chat", {"agent_id": owner, "message": "tell me"})),
                error_of(await client.call_tool("forget", {"agent_id": owner, "document_id": owned["id"]})),
                error_of(await client.call_tool("forget", {"agent_id": other, "memory_id": memory_id})),
            ]
            for uri in (f"lifelong://memories/{memory_id}", f"lifelong://agents/{owner}/memories"):
                with pytest.raises(MCPError, match="not found"):
                    await client.read_resource(uri)
        return refused, memory_id

    refused, memory_id = asyncio.run(attempts())
    assert all("404" in message and "not found" in message for message in refused), refused
    with deployment.client(owner_key) as api:  # and nothing of the owner's changed
        assert api.get(f"/v1/memories/{memory_id}").status_code == 200
        assert api.get(f"/v1/agents/{owner}/sessions").json()["data"] == []


def test_mcp_tools_explain_bad_arguments(deployment):
    agent_id, key = new_agent(deployment, "mcp-bad-input")

    async def calls():
        async with over_http(deployment, key) as client:
            return [
                error_of(await client.call_tool("forget", {"agent_id": agent_id})),
                error_of(await client.call_tool("forget", {"agent_id": agent_id, "document_id": 1, "event_id": 1})),
                error_of(await client.call_tool("recall", {"agent_id": 0, "query": "x"})),
                error_of(await client.call_tool("recall", {"agent_id": agent_id, "query": "x", "top_k": 0})),
                error_of(await client.call_tool("remember", {"agent_id": agent_id, "text": ""})),
            ]

    neither, both, zero_id, zero_k, empty = asyncio.run(calls())
    assert "exactly one" in neither and "exactly one" in both
    assert "agent_id" in zero_id and "top_k" in zero_k
    assert "empty" in empty


def test_mcp_needs_a_valid_key(deployment):
    for headers in ({}, {"Authorization": "Bearer ll_not-a-key"}, {"Authorization": "Basic eDp5"}):
        response = httpx.post(f"{deployment.url}/mcp", headers=headers, timeout=30,
                              json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"
    # `lifelong mcp` checks its key before serving: one line and a non-zero exit, not a silent dead server.
    run = subprocess.run([LIFELONG, "mcp", "--url", deployment.url, "--key", "ll_not-a-key"], capture_output=True,
                         text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr.startswith("lifelong mcp: 401") and len(run.stderr.strip().splitlines()) == 1
