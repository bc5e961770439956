"""Real `lifelong serve` (and `lifelong worker`) processes for end-to-end tests through HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
# Generous: a process imports torch and Celery; a wait ending here is a failure, not a timing assertion.
WAIT_S = 120.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Deployment:
    """`lifelong serve` on a port, plus a separate `lifelong worker` when the broker is external."""

    name: str
    env: dict[str, str]
    logs: Path
    port: int = field(default_factory=free_port)
    processes: list[subprocess.Popen] = field(default_factory=list)
    server: subprocess.Popen | None = None
    worker: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return Path(self.env["LIFELONG_DATA_DIR"])

    def _spawn(self, *args: str) -> subprocess.Popen:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIFELONG_")}
        env.update(self.env, PYTHONPATH=str(ROOT))
        log = open(self.logs / f"{args[0]}-{len(self.processes)}.log", "wb")
        process = subprocess.Popen([sys.executable, "-m", "agent.cli", *args], cwd=ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append(process)
        return process

    def start(self) -> None:
        """Start the server (and the worker of a scale-out deployment) and wait until it is ready."""
        self.server = self._spawn("serve", f"--port={self.port}", "--log-level=warning",
                                  *(["--no-worker"] if self.name != "embedded" else []))
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                pytest.fail(f"lifelong serve exited with {self.server.returncode}; see {self.logs}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        else:
            pytest.fail(f"lifelong serve not ready after {WAIT_S}s; see {self.logs}")
        if self.name != "embedded" and self.worker is None:  # after the server migrated the database
            self.worker = self._spawn("worker", "--loglevel=INFO")

    def stop_server(self) -> None:
        """SIGTERM, as a service manager would; the embedded worker goes with it."""
        os.killpg(self.server.pid, signal.SIGTERM)
        self.server.wait(timeout=60)

    def restart_server(self) -> None:
        self.stop_server()
        self.start()

    @property
    def admin_key(self) -> str:
        return self.env.get("LIFELONG_ADMIN_KEY") or (self.data_dir / "admin.key").read_text().strip()

    def client(self, key: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120)

    def shutdown(self) -> None:
        for process in self.processes:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(timeout=30)


def sse_events(response: httpx.Response) -> list[tuple[str | None, str]]:
    """(event, data) pairs of a Server-Sent Events response, in order."""
    events, name, data = [], None, []
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data.append(line.removeprefix("data: "))
        elif not line and data:
            events.append((name, "\n".join(data)))
            name, data = None, []
    return events


def stream_message(client: httpx.Client, session_id: int, content: str, **options) -> tuple[str, dict]:
    """POST a message with stream=true; returns the joined text pieces and the `done` event."""
    with client.stream("POST", f"/v1/sessions/{session_id}/messages",
                       json={"content": content, "stream": True, **options}) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
    assert [name for name, _ in events[:-1]] == ["piece"] * (len(events) - 1) and events[-1][0] == "done", events
    return "".join(json.loads(data)["text"] for _, data in events[:-1]), json.loads(events[-1][1])
