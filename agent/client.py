"""A small typed HTTP client for the lifelong API (docs/API.md), used by the CLI.

Every failure a caller can meet (server unreachable, timeout, 4xx/5xx) becomes one `ApiError`
with a sentence a person can act on, so the CLI can print one line instead of a traceback.
Responses are returned as decoded JSON objects: the API's schemas belong to the server, and the
CLI only reads the fields it shows.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

JSON = dict[str, Any]
DEFAULT_URL = "http://127.0.0.1:8000"
# Reading a reply or a streamed upload can take long on a CPU; connecting should not.
TIMEOUT = httpx.Timeout(300.0, connect=10.0)
# The API's largest page (agent.pagination.MAX_LIMIT, memory.admin.MAX_PAGE): a bigger ?limit= is a 422,
# so a long listing asks for pages of at most this and follows the cursor.
MAX_PAGE = 500
# A document's statuses that no longer change (agent.schemas.DocumentPublic.status): a client waiting for one
# to be learned stops at these.
FINISHED_DOCUMENT_STATUSES = frozenset({"learned", "failed", "forgotten"})


class ApiError(Exception):
    """A request that did not succeed; `status` is None when no HTTP response came back."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class SseEvent:
    event: str
    data: JSON


class Client:
    def __init__(self, base_url: str = DEFAULT_URL, api_key: str | None = None, *,
                 transport: httpx.BaseTransport | None = None):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=TIMEOUT, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- agents

    def create_agent(self, *, name: str, base_checkpoint: str | None = None, learning: JSON | None = None) -> JSON:
        """201 with the agent; a name in use is a 409."""
        body = _present({"name": name, "base_checkpoint": base_checkpoint, "learning": learning})
        return self._json("POST", "/v1/agents", json=body)

    def list_agents(self, *, limit: int | None = None) -> Iterator[JSON]:
        return self._pages("/v1/agents", {}, limit)

    def get_agent(self, agent_id: int) -> JSON:
        return self._json("GET", f"/v1/agents/{agent_id}")

    def list_versions(self, agent_id: int, *, limit: int | None = None) -> Iterator[JSON]:
        """The agent's kept weight versions, newest first, each with its gate's verdict when one fell due."""
        return self._pages(f"/v1/agents/{agent_id}/weights", {}, limit)

    def delete_agent(self, agent_id: int) -> None:
        self._request("DELETE", f"/v1/agents/{agent_id}")

    # -- keys

    def create_key(self, *, agent_id: int | None = None, name: str | None = None) -> JSON:
        # agent_id is always sent (null: an admin key); a missing name leaves the server's default.
        return self._json("POST", "/v1/keys", json={"agent_id": agent_id, **_present({"name": name})})

    def list_keys(self, *, limit: int | None = None) -> Iterator[JSON]:
        return self._pages("/v1/keys", {}, limit)

    def revoke_key(self, key_id: int) -> None:
        self._request("DELETE", f"/v1/keys/{key_id}")

    # -- sessions and messages

    def create_session(self, agent_id: int) -> JSON:
        return self._json("POST", f"/v1/agents/{agent_id}/sessions", json={})

    def get_session(self, session_id: int) -> JSON:
        return self._json("GET", f"/v1/sessions/{session_id}")

    def stream_message(self, session_id: int, content: str, **options: Any) -> Iterator[SseEvent]:
        """The reply as it is generated: `piece` events ({"text"}), then one `done` event (user_event_id,
        reply_event_id, stop_reason, weight_version, bytes_in, bytes_out, first_byte_ms, elapsed_ms)."""
        body = {"content": content, "stream": True, **_present(options)}
        with self._stream("POST", f"/v1/sessions/{session_id}/messages", json=body) as response:
            yield from _parse_sse(response.iter_lines())

    # -- documents

    def upload_document(self, agent_id: int, chunks: Iterable[bytes], *, name: str | None = None,
                        content_type: str = "text/plain") -> JSON:
        """Send `chunks` as one streamed (chunked) body, so a large file never sits in memory."""
        params = {"name": name} if name else {}
        return self._json("POST", f"/v1/agents/{agent_id}/documents", params=params, content=chunks,
                          headers={"Content-Type": content_type})

    def get_document(self, document_id: int) -> JSON:
        return self._json("GET", f"/v1/documents/{document_id}")

    # -- memories

    def list_memories(self, agent_id: int, *, limit: int | None = None, document_id: int | None = None,
                      session_id: int | None = None, event_id: int | None = None,
                      text: str | None = None) -> Iterator[JSON]:
        """Newest first; `text` keeps the memories whose text contains it."""
        filters = {"document_id": document_id, "session_id": session_id, "event_id": event_id, "text": text}
        return self._pages(f"/v1/agents/{agent_id}/memories", _present(filters), limit)

    def get_memory(self, memory_id: int) -> JSON:
        return self._json("GET", f"/v1/memories/{memory_id}")

    def recall(self, agent_id: int, query: str, *, top_k: int | None = None) -> list[JSON]:
        """The hits, best first (the API answers a bare list, not a page)."""
        body = _present({"query": query, "top_k": top_k})
        return self._json("POST", f"/v1/agents/{agent_id}/memories/recall", json=body)

    def delete_memory(self, memory_id: int) -> None:
        self._request("DELETE", f"/v1/memories/{memory_id}")

    def delete_memories(self, agent_id: int, *, document_id: int | None = None, session_id: int | None = None,
                        event_id: int | None = None, everything: bool = False, weights: bool | None = None) -> JSON:
        """`{deleted, job}`; the server wants exactly one of the three ids or `everything`. `weights`: None for
        the server's default (a source is also taken out of the weights, by the forget job `job`)."""
        params = _present({"document_id": document_id, "session_id": session_id, "event_id": event_id,
                           "all": "true" if everything else None,
                           "weights": None if weights is None else str(weights).lower()})
        return self._json("DELETE", f"/v1/agents/{agent_id}/memories", params=params)

    def get_forget_job(self, agent_id: int, job_id: int) -> JSON:
        return self._json("GET", f"/v1/agents/{agent_id}/forget-jobs/{job_id}")

    def export_memories(self, agent_id: int) -> Iterator[bytes]:
        with self._stream("GET", f"/v1/agents/{agent_id}/memories/export") as response:
            yield from response.iter_bytes()

    def import_memories(self, agent_id: int, chunks: Iterable[bytes]) -> JSON:
        return self._json("POST", f"/v1/agents/{agent_id}/memories/import", content=chunks,
                          headers={"Content-Type": "application/x-ndjson"})

    # -- plumbing

    def _pages(self, path: str, params: JSON, limit: int | None) -> Iterator[JSON]:
        """Items of a cursor-paginated list, following `next_cursor` until `limit` items or the end."""
        cursor, seen = None, 0
        while True:
            page_params = dict(params)
            if cursor:
                page_params["cursor"] = cursor
            page_params["limit"] = MAX_PAGE if limit is None else min(limit - seen, MAX_PAGE)
            page = self._json("GET", path, params=page_params)
            for item in page.get("data", []):
                yield item
                seen += 1
                if limit is not None and seen >= limit:
                    return
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError as exc:
            raise ApiError(f"{method} {path}: the server answered {response.status_code} with no JSON body") from exc

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        with self._errors():
            response = self._http.request(method, path, **kwargs)
        _raise_for_status(response)
        return response

    @contextmanager
    def _stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        with self._errors(), self._http.stream(method, path, **kwargs) as response:
            if response.is_error:
                response.read()
                _raise_for_status(response)
            yield response

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except httpx.ConnectError as exc:
            raise ApiError(f"cannot reach the server at {self.base_url} ({exc}); is `lifelong serve` running? "
                           "(set --url or LIFELONG_URL)") from exc
        except httpx.TimeoutException as exc:
            raise ApiError(f"the server at {self.base_url} did not answer in time ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise ApiError(f"the connection to {self.base_url} failed: {exc}") from exc


def _present(values: dict[str, Any]) -> JSON:
    """The entries that are set: an option left out is not sent, so the server's default applies."""
    return {key: value for key, value in values.items() if value is not None}


def _raise_for_status(response: httpx.Response) -> None:
    if not response.is_error:
        return
    status = response.status_code
    message = server_message(response)
    if status == 401:
        raise ApiError(f"401 unauthorized: {message} (pass an API key with --key or LIFELONG_API_KEY)", status)
    raise ApiError(f"{status} {response.reason_phrase.lower()}: {message}", status)


def server_message(response: httpx.Response) -> str:
    """The server's own sentence from `{"error": {"message"}}`, or FastAPI's `{"detail"}`, or the raw text."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:200] or "(no message)"
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if "detail" in body:
            return body["detail"] if isinstance(body["detail"], str) else json.dumps(body["detail"])
    return json.dumps(body)[:200]


def _event_message(payload: JSON) -> str:
    """The sentence of an error event: `{"message"}` or the error envelope `{"error": {"message"}}`."""
    error = payload.get("error")
    if isinstance(error, dict):
        error = error.get("message")
    return str(payload.get("message") or error or json.dumps(payload))


def _parse_sse(lines: Iterable[str]) -> Iterator[SseEvent]:
    """Server-Sent Events (the subset the API sends: `event:` and JSON `data:` fields, blank-line separated).

    An `error` event (a failure after the stream started, when the status is already 200) is raised.
    """
    event, data = "message", []
    for line in lines:
        if line.startswith(":"):
            continue  # a comment, e.g. a keep-alive
        if line:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)
            continue
        if data:
            try:
                payload = json.loads("\n".join(data))
            except ValueError as exc:
                raise ApiError(f"the server sent a malformed event: {' '.join(data)[:200]}") from exc
            if event == "error":
                raise ApiError(f"the server failed mid-reply: {_event_message(payload)}")
            yield SseEvent(event, payload)
        event, data = "message", []
