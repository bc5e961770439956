"""compose.yaml's topology, run natively: each service's command and environment, as parsed from compose.yaml,
started as a local process against the local PostgreSQL and Redis.

Docker is not available where the tests run, so this is how the deployment that compose describes gets
tested. Three things differ from compose, on purpose: the database and broker URLs name the test
servers instead of the `postgres`/`redis` services, the data directory is a temporary one instead of
the `/data` volume, and the api listens on 127.0.0.1 at a free port instead of 0.0.0.0:8000. `.env` is
`.env.example` (what `cp .env.example .env` gives), so the admin key is known: `Topology.admin_key`.

    with Topology(database_url=postgres_or_skip(), broker_url=redis_or_skip(), workdir=tmp_path) as topology:
        topology.run("migrate")
        topology.start("learn-worker")
        topology.start("api")          # waits for /readyz
        httpx.get(f"{topology.api_url}/v1/agents", headers={"Authorization": f"Bearer {topology.admin_key}"})
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from celery.utils.nodenames import host_format

from bench.deployment import free_port, is_ready
from settings import Settings
from workers.app import make_app

ROOT = Path(__file__).resolve().parents[1]
# The service processes tests start import the project, and tests/hooks/sitecustomize.py (the pauses tests ask for).
PYTHONPATH = os.pathsep.join([str(ROOT), str(ROOT / "tests" / "hooks")])
COMPOSE = ROOT / "compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
# Generous: a process imports torch and loads a model; a wait ending here is a failure, not a timing assertion.
WAIT_S = 120.0
_VARIABLE = re.compile(r"\$\$|\$\{(\w+)(?::?-([^}]*))?\}")


def load_compose(path: Path = COMPOSE) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def read_env_file(path: Path) -> dict[str, str]:
    """`KEY=VALUE` lines, as compose reads an env_file (comments and blank lines skipped)."""
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line.strip() and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def interpolate(value: str, variables: Mapping[str, str]) -> str:
    """Compose's `${NAME}`, `${NAME:-default}` and `$$` (a literal `$`)."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return variables.get(match.group(1)) or (match.group(2) or "")

    return _VARIABLE.sub(substitute, value)


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    argv: list[str]
    env: dict[str, str]


def service_spec(compose: Mapping[str, Any], name: str, *, database_url: str, broker_url: str, data_dir: Path,
                 env_file: Path = ENV_EXAMPLE) -> ServiceSpec:
    """The process compose would start for service `name`, with the URLs and data directory replaced."""
    service = compose["services"][name]
    variables = read_env_file(env_file)  # compose reads .env both for ${...} and as the services' env_file
    env = dict(variables)
    env.update({key: interpolate(str(value), variables) for key, value in service.get("environment", {}).items()})
    env.update(LIFELONG_DATABASE_URL=database_url, LIFELONG_BROKER_URL=broker_url, LIFELONG_DATA_DIR=str(data_dir))
    command = [interpolate(str(word), variables) for word in service["command"]]
    if command[0] != "lifelong":
        raise ValueError(f"service {name} does not run the lifelong CLI: {command}")
    # The image's `lifelong` script is agent.cli:main; running the module needs no installed script.
    return ServiceSpec(name, [sys.executable, "-m", "agent.cli", *command[1:]], env)


def option(argv: list[str], flag: str) -> str | None:
    """The value after `flag` in a command line."""
    return argv[argv.index(flag) + 1] if flag in argv else None


def _replace_option(argv: list[str], flag: str, value: str) -> list[str]:
    if flag not in argv:
        return [*argv, flag, value]
    at = argv.index(flag) + 1
    return [*argv[:at], value, *argv[at + 1:]]


class Topology:
    """Services of compose.yaml as local processes (each in its own process group, killed on exit)."""

    def __init__(self, *, database_url: str, broker_url: str, workdir: Path, compose: Path = COMPOSE,
                 env_file: Path = ENV_EXAMPLE):
        self.compose = load_compose(compose)
        self.database_url, self.broker_url, self.env_file = database_url, broker_url, env_file
        # Also the processes' working directory, so no developer's .env in the checkout leaks in.
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.processes: dict[str, subprocess.Popen] = {}
        self.api_url: str | None = None

    def spec(self, name: str) -> ServiceSpec:
        return service_spec(self.compose, name, database_url=self.database_url, broker_url=self.broker_url,
                            data_dir=self.data_dir, env_file=self.env_file)

    @property
    def admin_key(self) -> str | None:
        return self.spec("api").env.get("LIFELONG_ADMIN_KEY")

    def settings(self) -> Settings:
        """The settings every service of this topology runs with (to send tasks or inspect workers)."""
        return Settings(database_url=self.database_url, broker_url=self.broker_url, data_dir=self.data_dir)

    def log(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def run(self, name: str, *, timeout: float = WAIT_S) -> subprocess.CompletedProcess:
        """A one-shot service (migrate); fails the test with its output unless it exits 0, as compose's
        `service_completed_successfully` would hold back everything after it."""
        spec = self.spec(name)
        result = subprocess.run(spec.argv, cwd=self.workdir, env=self._process_env(spec), capture_output=True,
                                text=True, timeout=timeout)
        if result.returncode != 0:
            pytest.fail(f"service {name} exited with {result.returncode}:\n{result.stdout}{result.stderr}")
        return result

    def start(self, name: str) -> subprocess.Popen:
        """A long-running service; the api is also waited for until /readyz answers 200."""
        spec = self.spec(name)
        argv = spec.argv
        if name == "api":
            port = free_port()
            argv = _replace_option(_replace_option(argv, "--host", "127.0.0.1"), "--port", str(port))
            self.api_url = f"http://127.0.0.1:{port}"
        with self.log(name).open("wb") as log:
            process = subprocess.Popen(argv, cwd=self.workdir, env=self._process_env(spec), stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        self.processes[name] = process
        if name == "api":
            self.wait_for(lambda: is_ready(self.api_url), "the api's /readyz", name)
        return process

    def worker_node(self, name: str) -> str:
        """The Celery node name of a worker service, `%h` expanded as the worker expands it."""
        hostname = option(self.spec(name).argv, "--hostname")
        if hostname is None:
            raise ValueError(f"service {name} names no --hostname")
        return host_format(hostname)

    def wait_for_worker(self, name: str) -> dict[str, Any]:
        """Wait until the worker of service `name` answers a ping; its queues, as the worker reports them."""
        node = self.worker_node(name)
        app = make_app(self.settings())
        try:
            self.wait_for(lambda: app.control.ping(destination=[node], timeout=1.0), f"a pong from {node}", name)
            return app.control.inspect(destination=[node], timeout=5.0).active_queues()[node]
        finally:
            app.close()

    def wait_for(self, condition: Callable[[], object], what: str, name: str) -> object:
        """Poll `condition` until truthy; fail with the service's log if it exits or WAIT_S passes."""
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            if self.processes[name].poll() is not None:
                pytest.fail(f"service {name} exited with {self.processes[name].returncode} while waiting for "
                            f"{what}:\n{self._tail(name)}")
            time.sleep(0.2)
        pytest.fail(f"timed out after {WAIT_S}s waiting for {what}:\n{self._tail(name)}")

    def close(self) -> None:
        for process in self.processes.values():
            try:
                os.killpg(process.pid, signal.SIGTERM)  # the whole group: a worker's pool children too
            except ProcessLookupError:
                continue
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)

    def __enter__(self) -> Topology:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _process_env(self, spec: ServiceSpec) -> dict[str, str]:
        # The test process's own LIFELONG_* variables must not reach the services: compose would not pass them.
        env = {key: value for key, value in os.environ.items() if not key.startswith("LIFELONG_")}
        return {**env, **spec.env, "PYTHONPATH": PYTHONPATH}

    def _tail(self, name: str, lines: int = 40) -> str:
        return "\n".join(self.log(name).read_text(errors="replace").splitlines()[-lines:])
