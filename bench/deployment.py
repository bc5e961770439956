"""Real `lifelong serve` (and `lifelong worker`) processes on a free port, driven over HTTP.

The benchmarks measure through these, and the end-to-end tests import them (dependencies point
from tests to bench, never from the product packages to either). A failure to start raises
`DeploymentError` with where the logs are; a test sees that as an error, a benchmark as its exit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
# Generous: a process imports torch and Celery; a wait ending here is a failure, not a timing assertion.
WAIT_S = 120.0


class DeploymentError(RuntimeError):
    """A server that exited or never became ready."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def is_ready(url: str) -> bool:
    """Whether the server at `url` answers /readyz with 200 (database, broker and model loaded)."""
    try:
        return httpx.get(f"{url}/readyz", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


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

    def process_env(self) -> dict[str, str]:
        """This deployment's environment: the caller's own LIFELONG_* variables never leak in."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIFELONG_")}
        return {**env, "PYTHONPATH": str(ROOT), **self.env}  # a caller's PYTHONPATH may add to the project's

    def _spawn(self, *args: str) -> subprocess.Popen:
        # The process writes it for as long as it lives; closed when the process is reaped.
        log = open(self.logs / f"{args[0]}-{len(self.processes)}.log", "wb")  # noqa: SIM115
        process = subprocess.Popen([sys.executable, "-m", "agent.cli", *args], cwd=ROOT, env=self.process_env(),
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append(process)
        return process

    def start(self) -> None:
        """Start the server (and the worker of a scale-out deployment) and wait until it is ready."""
        self.server = self._spawn("serve", f"--port={self.port}", "--log-level=warning",
                                  *(["--no-worker"] if self.name != "embedded" else []))
        deadline = time.monotonic() + WAIT_S
        while not is_ready(self.url):
            if self.server.poll() is not None:
                raise DeploymentError(f"lifelong serve exited with {self.server.returncode}; see {self.logs}")
            if time.monotonic() > deadline:
                raise DeploymentError(f"lifelong serve not ready after {WAIT_S}s; see {self.logs}")
            time.sleep(0.3)
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
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
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
