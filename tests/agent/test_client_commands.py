"""The CLI's client commands against a scripted HTTP transport (httpx.MockTransport): the requests they
send and what they print. The same commands through the real server are the end-to-end tests' job."""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Callable

import httpx
import pytest
from sqlalchemy import create_engine, inspect

from agent.cli import main
from agent.client import Client
from agent.commands import common

Route = Callable[[httpx.Request], httpx.Response]


class FakeApi:
    """Answers each (method, path) from a table, and keeps every request it saw (bodies read)."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Route] = {}
        self.requests: list[httpx.Request] = []

    def on(self, method: str, path: str, route: Route | httpx.Response) -> None:
        self.routes[method, path] = route if callable(route) else (lambda request: route)

    def handle(self, request: httpx.Request) -> httpx.Response:
        request.read()  # a streamed upload arrives here as a chunked body
        self.requests.append(request)
        route = self.routes.get((request.method, request.url.path))
        if route is None:
            return httpx.Response(404, json={"error": {"code": "not_found", "message": "no such route"}})
        return route(request)

    def sent(self, method: str, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == method and r.url.path == path]


@pytest.fixture
def api(monkeypatch) -> FakeApi:
    fake = FakeApi()
    monkeypatch.setattr(common, "Client", functools.partial(Client, transport=httpx.MockTransport(fake.handle)))
    monkeypatch.setenv("LIFELONG_URL", "http://lifelong.test:9000")
    monkeypatch.setenv("LIFELONG_API_KEY", "env-key")
    return fake


def ndjson(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def sse(*events: tuple[str, dict]) -> httpx.Response:
    body = "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events)
    return httpx.Response(200, text=": keep-alive\n\n" + body, headers={"Content-Type": "text/event-stream"})


AGENT = {"id": 3, "name": "ada", "weight_version": 7, "memory_count": 120, "bytes_learned": 4096, "queue_lag": 0}


def test_agents_follow_cursors_and_print_tables_or_ndjson(api, capsys):
    api.on("GET", "/v1/agents", lambda r: httpx.Response(200, json=(
        {"data": [AGENT], "next_cursor": "c2"} if "cursor" not in r.url.params
        else {"data": [{**AGENT, "id": 4, "name": "bob"}], "next_cursor": None})))

    assert main(["agents", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["id", "name", "weight_version", "memory_count", "bytes_learned", "queue_lag"]
    assert [line.split()[:2] for line in lines[1:]] == [["3", "ada"], ["4", "bob"]]
    assert api.requests[1].url.params["cursor"] == "c2"
    # Where and as whom: flags and the environment.
    assert str(api.requests[0].url).startswith("http://lifelong.test:9000/v1/agents")
    assert api.requests[0].headers["Authorization"] == "Bearer env-key"

    assert main(["agents", "list", "--json", "--key", "flag-key"]) == 0
    assert [a["name"] for a in ndjson(capsys.readouterr().out)] == ["ada", "bob"]
    assert api.requests[-1].headers["Authorization"] == "Bearer flag-key"


def test_agents_create_show_delete(api, capsys):
    api.on("POST", "/v1/agents", lambda r: httpx.Response(201, json={**AGENT, **json.loads(r.content)}))
    api.on("GET", "/v1/agents/3", httpx.Response(200, json=AGENT))
    api.on("DELETE", "/v1/agents/3", httpx.Response(204))

    assert main(["agents", "create", "ada", "--learning", '{"learning_rate": 0.001}', "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == 3
    sent = json.loads(api.sent("POST", "/v1/agents")[0].content)
    assert sent == {"name": "ada", "learning": {"learning_rate": 0.001}}

    assert main(["agents", "show", "3"]) == 0
    shown = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines())
    assert {k.strip(): v for k, v in shown.items()}["weight_version"] == "7"

    assert main(["agents", "delete", "3"]) == 0
    assert capsys.readouterr().out == "deleted agent 3\n"

    assert main(["agents", "create", "ada", "--learning", "{not json"]) == 2
    assert "--learning is not a JSON object" in capsys.readouterr().err

    # A name in use: the server's 409 and its sentence, on one line.
    api.on("POST", "/v1/agents", httpx.Response(409, json={"error": {
        "code": "conflict", "message": "an agent named 'ada' exists; choose another name"}}))
    assert main(["agents", "create", "ada", "--base-checkpoint", "preset:tiny"]) == 1
    assert capsys.readouterr().err == ("lifelong agents: 409 conflict: an agent named 'ada' exists; "
                                       "choose another name\n")
    assert json.loads(api.sent("POST", "/v1/agents")[-1].content) == {"name": "ada", "base_checkpoint": "preset:tiny"}


def test_agents_versions_say_what_the_gate_said(api, capsys):
    refused = {"passed": False, "reason": "answered 2 of 8 plain questions, the last good weights 5",
               "scores": {}, "last_good_scores": {}}
    api.on("GET", "/v1/agents/3/weights", httpx.Response(200, json={"data": [
        {"version": 9, "parent_version": 8, "events_learned_through": 40, "tag": None, "sha256": "ab",
         "gate": refused, "created_at": "2026-12-07T06:00:00Z"},
        {"version": 8, "parent_version": 7, "events_learned_through": 39, "tag": None, "sha256": "cd",
         "gate": None, "created_at": "2026-12-07T05:59:00Z"}], "next_cursor": None}))
    assert main(["agents", "versions", "3"]) == 0
    table = capsys.readouterr().out
    assert "v9 refused: answered 2 of 8 plain questions, the last good weights 5" in table.splitlines()
    assert [line.split()[3] for line in table.splitlines()[1:3]] == ["refused", "2026-12-07T05:59:00Z"]
    assert main(["agents", "versions", "3", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["gate"] for row in rows] == [refused, None]


def test_keys_print_the_secret_alone_on_stdout(api, capsys):
    api.on("POST", "/v1/keys", httpx.Response(201, json={"id": 9, "key": "ll_secret", "agent_id": 3, "name": "ci"}))
    api.on("GET", "/v1/keys", httpx.Response(200, json={"data": [{"id": 9, "agent_id": 3, "name": "ci"}],
                                                         "next_cursor": None}))
    api.on("DELETE", "/v1/keys/9", httpx.Response(204))

    assert main(["keys", "create", "--agent", "3", "--name", "ci"]) == 0
    out = capsys.readouterr()
    assert out.out == "ll_secret\n" and "shown only once" in out.err
    assert json.loads(api.sent("POST", "/v1/keys")[0].content) == {"agent_id": 3, "name": "ci"}

    assert main(["keys", "list", "--json"]) == 0
    assert ndjson(capsys.readouterr().out) == [{"id": 9, "agent_id": 3, "name": "ci"}]
    assert main(["keys", "create"]) == 0  # an admin key: agent_id null, the name left to the server's default
    assert json.loads(api.sent("POST", "/v1/keys")[-1].content) == {"agent_id": None}
    capsys.readouterr()
    assert main(["keys", "revoke", "9", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"revoked": 9}


def reply_route(request: httpx.Request) -> httpx.Response:
    """The server's SSE reply: `piece` events, then `done` with exactly the fields docs/API.md names."""
    content = json.loads(request.content)["content"]
    done = {"user_event_id": 1, "reply_event_id": 2, "stop_reason": "end_of_turn", "weight_version": 0,
            "bytes_in": len(content), "bytes_out": 6 + len(content), "first_byte_ms": 12.5, "elapsed_ms": 40.0}
    return sse(("piece", {"text": "echo: "}), ("piece", {"text": content}), ("done", done))


def test_chat_creates_a_session_and_streams_each_line(api, capsys, monkeypatch):
    api.on("POST", "/v1/agents/3/sessions", httpx.Response(201, json={"id": 42, "agent_id": 3}))
    api.on("POST", "/v1/sessions/42/messages", reply_route)
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\n\nhow are you\n"))

    assert main(["chat", "--agent", "3", "--seed", "1"]) == 0
    out = capsys.readouterr()
    assert out.out == "echo: hello\necho: how are you\n"  # the blank line is not sent
    assert "session 42" in out.err and "--session 42" in out.err
    bodies = [json.loads(r.content) for r in api.sent("POST", "/v1/sessions/42/messages")]
    assert bodies == [{"content": "hello", "stream": True, "seed": 1},
                      {"content": "how are you", "stream": True, "seed": 1}]


def test_chat_resumes_a_session_and_reports_json(api, capsys):
    api.on("GET", "/v1/sessions/42", httpx.Response(200, json={"id": 42, "agent_id": 3}))
    api.on("POST", "/v1/sessions/42/messages", reply_route)

    assert main(["chat", "--session", "42", "-m", "again", "--json"]) == 0
    first, turn = ndjson(capsys.readouterr().out)
    assert first == {"session_id": 42}
    assert turn["reply"] == "echo: again" and turn["reply_event_id"] == 2 and turn["stop_reason"] == "end_of_turn"
    assert not api.sent("POST", "/v1/agents/3/sessions")


@pytest.mark.parametrize("payload", [{"message": "the model failed to load"},
                                     {"error": {"code": "internal_error", "message": "the model failed to load"}}])
def test_chat_error_event_mid_stream_is_one_line(api, capsys, payload):
    api.on("GET", "/v1/sessions/42", httpx.Response(200, json={"id": 42}))
    api.on("POST", "/v1/sessions/42/messages", sse(("piece", {"text": "par"}), ("error", payload)))
    assert main(["chat", "--session", "42", "-m", "hi"]) == 1
    err = capsys.readouterr().err
    assert err.endswith("lifelong chat: the server failed mid-reply: the model failed to load\n")


def document_routes(api: FakeApi, states: list[dict]) -> None:
    """A document upload, then one GET answer per poll from `states`."""
    polls = iter(states)
    api.on("POST", "/v1/agents/3/documents", lambda r: httpx.Response(202, json={
        "id": 5, "status": "queued", "bytes_received": len(r.content), "bytes_learned": 0}))
    api.on("GET", "/v1/documents/5", lambda r: httpx.Response(200, json={"id": 5, **next(polls)}))


def test_ingest_streams_the_file_and_follows_learning(api, capsys, tmp_path):
    data = bytes(range(256)) * 1024  # 256 KiB: several pieces, and not valid UTF-8 (the model is byte-level)
    path = tmp_path / "book.txt"
    path.write_bytes(data)
    total = len(data)
    document_routes(api, [{"status": "learning", "bytes_received": total, "bytes_learned": total // 2},
                          {"status": "learned", "bytes_received": total, "bytes_learned": total}])

    assert main(["ingest", str(path), "--agent", "3", "--poll-s", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"id": 5, "status": "learned", "bytes_received": total,
                                                  "bytes_learned": total}
    upload = api.sent("POST", "/v1/agents/3/documents")[0]
    assert upload.content == data
    assert upload.headers["Transfer-Encoding"] == "chunked"  # streamed, not read whole to set a length
    assert upload.headers["Content-Type"] == "text/plain" and upload.url.params["name"] == "book.txt"
    assert len(api.sent("GET", "/v1/documents/5")) == 2


def test_ingest_ndjson_from_stdin_without_waiting(api, capsys, monkeypatch):
    document_routes(api, [])
    stdin = io.TextIOWrapper(io.BytesIO(b'{"text": "one"}\n{"text": "two"}\n'))
    monkeypatch.setattr("sys.stdin", stdin)

    assert main(["ingest", "-", "--agent", "3", "--ndjson", "--no-wait"]) == 0
    assert "status: queued" in capsys.readouterr().out
    upload = api.sent("POST", "/v1/agents/3/documents")[0]
    assert upload.headers["Content-Type"] == "application/x-ndjson" and "name" not in upload.url.params
    assert upload.content == b'{"text": "one"}\n{"text": "two"}\n'
    assert not api.sent("GET", "/v1/documents/5")


def test_ingest_failed_document_exits_non_zero(api, capsys, tmp_path):
    (tmp_path / "a.txt").write_text("text")
    document_routes(api, [{"status": "failed", "bytes_received": 4, "bytes_learned": 0, "failed_reason": "disk full"}])
    assert main(["ingest", str(tmp_path / "a.txt"), "--agent", "3", "--poll-s", "0", "--quiet"]) == 1
    assert capsys.readouterr().err == "lifelong ingest: document 5 failed: disk full\n"


def test_memories_list_show_recall(api, capsys):
    text = "a\nb" + "c" * 100
    memory = {"id": 11, "event_id": 40, "document_id": 5, "session_id": 6, "weight_version": 2, "hit_count": 0,
              "text": text}
    api.on("GET", "/v1/agents/3/memories", lambda r: httpx.Response(200, json={
        "data": [memory], "next_cursor": None if "cursor" in r.url.params else "more"}))
    api.on("GET", "/v1/memories/11", httpx.Response(200, json={**memory, "byte_start": 0}))
    # The API answers recall with a bare list of hits, best first (not a page).
    api.on("POST", "/v1/agents/3/memories/recall",
           httpx.Response(200, json=[{"memory_id": 11, "score": 0.9, "token_hits": 4, "text": text}]))

    assert main(["memories", "list", "--agent", "3", "--document", "5", "--limit", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    # One line per memory, provenance first, its text cut to fit (newlines shown escaped).
    assert len(lines) == 2 and lines[1].split() == ["11", "40", "5", "6", "2", "0", "a\\nb" + "c" * 55 + "…"]
    params = api.requests[0].url.params
    assert params["document_id"] == "5" and params["limit"] == "1" and "session_id" not in params
    assert len(api.requests) == 1  # the limit was reached: the next page is not fetched

    # The server's other filters: the event read, and text the memory contains.
    assert main(["memories", "list", "--agent", "3", "--event", "40", "--text", "a b", "--limit", "2000",
                 "--json"]) == 0
    assert [m["event_id"] for m in ndjson(capsys.readouterr().out)] == [40, 40]  # two pages, then the end
    first, second = (dict(r.url.params) for r in api.requests[-2:])
    assert first == {"event_id": "40", "text": "a b", "limit": "500"}  # pages no larger than the API's
    assert second == {**first, "cursor": "more"}

    assert main(["memories", "recall", "--agent", "3", "a b"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:3] == ["11", "0.9", "4"]

    assert main(["memories", "show", "11", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["byte_start"] == 0

    assert main(["memories", "recall", "--agent", "3", "a b", "--top-k", "4", "--json"]) == 0
    assert ndjson(capsys.readouterr().out)[0]["memory_id"] == 11
    assert json.loads(api.sent("POST", "/v1/agents/3/memories/recall")[-1].content) == {"query": "a b", "top_k": 4}


def test_memories_forget_one_by_source_or_all(api, capsys):
    api.on("DELETE", "/v1/memories/11", httpx.Response(204))
    api.on("DELETE", "/v1/agents/3/memories", httpx.Response(200, json={"deleted": 12}))

    assert main(["memories", "forget", "11"]) == 0
    assert capsys.readouterr().out == "forgot memory 11\n"
    assert main(["memories", "forget", "--agent", "3", "--document", "5"]) == 0
    assert capsys.readouterr().out == "forgot 12 memories\n"
    assert main(["memories", "forget", "--agent", "3", "--all", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"deleted": 12}
    assert main(["memories", "forget", "--agent", "3", "--event", "40"]) == 0
    capsys.readouterr()
    assert [dict(r.url.params) for r in api.sent("DELETE", "/v1/agents/3/memories")] == [
        {"document_id": "5"}, {"all": "true"}, {"event_id": "40"}]
    # Ambiguous or empty targets are refused before anything is deleted.
    assert main(["memories", "forget", "11", "--agent", "3", "--all"]) == 2
    assert main(["memories", "forget", "--agent", "3", "--document", "5", "--event", "40"]) == 2
    assert main(["memories", "forget", "--agent", "3"]) == 2
    assert "name exactly one of" in capsys.readouterr().err
    assert len(api.sent("DELETE", "/v1/agents/3/memories")) == 3


def _job(status: str, done: int, **more) -> dict:
    return {"id": 9, "agent_id": 3, "status": status, "events_total": 4, "events_done": done // 10,
            "bytes_total": 40, "bytes_done": done, "result_version": None, "failed_reason": None, **more}


def test_memories_forget_with_weights_follows_the_forget_job_to_its_end(api, capsys):
    api.on("DELETE", "/v1/agents/3/memories", httpx.Response(200, json={"deleted": 2, "job": _job("queued", 0)}))
    polls = iter([_job("replaying", 20), _job("done", 40, result_version=17)])
    api.on("GET", "/v1/agents/3/forget-jobs/9", lambda request: httpx.Response(200, json=next(polls)))

    assert main(["memories", "forget", "--agent", "3", "--document", "5", "--poll-s", "0"]) == 0
    assert capsys.readouterr().out == "forgot 2 memories; weights: forget job 9 done, version 17 is current\n"
    assert len(api.sent("GET", "/v1/agents/3/forget-jobs/9")) == 2
    assert main(["memories", "forget", "--agent", "3", "--session", "6", "--no-weights", "--no-wait", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["job"]["status"] == "queued"  # the fake's answer, not followed
    assert [dict(r.url.params) for r in api.sent("DELETE", "/v1/agents/3/memories")] == [
        {"document_id": "5"}, {"session_id": "6", "weights": "false"}]
    # A failed job: its reason on stderr and a non-zero exit; --weights with --all is refused before any request.
    api.on("DELETE", "/v1/agents/3/memories", httpx.Response(200, json={"deleted": 0, "job": _job(
        "failed", 0, failed_reason="ReplayMismatch: event 4")}))
    assert main(["memories", "forget", "--agent", "3", "--event", "4"]) == 1
    assert "forget job 9 failed: ReplayMismatch: event 4" in capsys.readouterr().err
    assert main(["memories", "forget", "--agent", "3", "--all", "--weights"]) == 2
    assert "roll back to version 0" in capsys.readouterr().err
    assert len(api.sent("DELETE", "/v1/agents/3/memories")) == 3


def test_memories_export_and_import_stream_ndjson(api, capsys, tmp_path):
    export = b'{"format": 1}\n{"text": "x"}\n'
    api.on("GET", "/v1/agents/3/memories/export",
           httpx.Response(200, content=export, headers={"Content-Type": "application/x-ndjson"}))
    api.on("POST", "/v1/agents/4/memories/import", lambda r: httpx.Response(200, json={"imported": 1}))

    out = tmp_path / "mem.ndjson"
    assert main(["memories", "export", "--agent", "3", "-o", str(out)]) == 0
    assert out.read_bytes() == export
    assert main(["memories", "import", "--agent", "4", str(out)]) == 0
    assert capsys.readouterr().out == "imported 1 memories into agent 4\n"
    upload = api.sent("POST", "/v1/agents/4/memories/import")[0]
    assert upload.content == export and upload.headers["Content-Type"] == "application/x-ndjson"


def test_a_broken_export_leaves_no_partial_file_and_keeps_an_earlier_export(api, capsys, tmp_path):
    def broken():
        yield b'{"format": 1}\n'
        raise httpx.ReadError("connection reset")

    api.on("GET", "/v1/agents/3/memories/export",
           lambda request: httpx.Response(200, content=broken(), headers={"Content-Type": "application/x-ndjson"}))
    out = tmp_path / "mem.ndjson"
    out.write_bytes(b"earlier export\n")
    assert main(["memories", "export", "--agent", "3", "-o", str(out)]) != 0
    assert "connection reset" in capsys.readouterr().err
    assert out.read_bytes() == b"earlier export\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mem.ndjson"]


@pytest.mark.parametrize(("response", "expected"), [
    (httpx.Response(401, json={"error": {"code": "unauthorized", "message": "missing or wrong API key"}}),
     "401 unauthorized: missing or wrong API key (pass an API key with --key or LIFELONG_API_KEY)"),
    (httpx.Response(404, json={"error": {"code": "not_found", "message": "no agent 3"}}), "404 not found: no agent 3"),
    (httpx.Response(403, json={"error": {"code": "forbidden", "message": "this needs an admin key"}}),
     "403 forbidden: this needs an admin key"),
    (httpx.Response(422, json={"detail": [{"msg": "field required"}]}),
     '422 unprocessable entity: [{"msg": "field required"}]'),
    (httpx.Response(502, text="<html>bad gateway</html>"), "502 bad gateway: <html>bad gateway</html>"),
])
def test_http_errors_are_one_line_with_the_servers_message(api, capsys, response, expected):
    api.on("GET", "/v1/agents/3", response)
    assert main(["agents", "show", "3"]) == 1
    out = capsys.readouterr()
    assert out.err == f"lifelong agents: {expected}\n" and out.out == ""


def test_unreachable_server_is_one_line(monkeypatch, capsys, tmp_path):
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    monkeypatch.setattr(common, "Client", functools.partial(Client, transport=httpx.MockTransport(refuse)))
    monkeypatch.delenv("LIFELONG_URL", raising=False)
    (tmp_path / "a.txt").write_text("text")
    for argv in (["agents", "list"], ["chat", "--agent", "1", "-m", "hi"],
                 ["ingest", str(tmp_path / "a.txt"), "--agent", "1", "--quiet"]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "cannot reach the server at http://127.0.0.1:8000" in err


def test_ingest_missing_file_is_one_line(api, capsys, tmp_path):
    assert main(["ingest", str(tmp_path / "nope.txt"), "--agent", "3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lifelong ingest:") and err.count("\n") == 1
    assert not api.requests


def test_migrate_upgrades_the_configured_database(monkeypatch, capsys, tmp_path):
    # The embedded default: an SQLite file in a data directory that does not exist yet.
    monkeypatch.delenv("LIFELONG_DATABASE_URL", raising=False)
    monkeypatch.setenv("LIFELONG_DATA_DIR", str(tmp_path / "new" / "data"))
    assert main(["migrate"]) == 0
    assert "database at the newest schema" in capsys.readouterr().out
    engine = create_engine(f"sqlite:///{tmp_path / 'new' / 'data' / 'lifelong.db'}")
    assert {"agents", "memories", "alembic_version"} <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_migrate_without_a_database_is_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("LIFELONG_DATABASE_URL", "postgresql://lifelong:secret@127.0.0.1:1/nowhere")
    monkeypatch.setenv("LIFELONG_DATA_DIR", str(tmp_path / "data"))
    assert main(["migrate"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("lifelong migrate: cannot use the database at postgresql://lifelong:***@")
    assert err.count("\n") == 1 and "secret" not in err
