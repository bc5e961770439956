"""The chaos during the load: a worker SIGKILLed every `--kill-every-s`, and the server restarted once, half way
(SIGTERM, as a service manager would). How a worker is killed depends on the deployment: `EmbeddedWorkers` for the
worker inside `serve`, `SeparateWorkers` for `lifelong worker` processes."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import threading
import time

import psutil

from bench.deployment import Deployment, DeploymentError
from bench.soak.recorder import Recorder


class EmbeddedWorkers:
    """The worker inside `serve` (agent.serve.EmbeddedWorker): it is killed, and the server starts a new one."""

    description = "SIGKILL of the embedded worker process (the server starts a new one)"

    def __init__(self, deployment: Deployment, rec: Recorder) -> None:
        self.deployment, self.rec = deployment, rec

    def worker_processes(self) -> list[psutil.Process]:
        """The spawned worker children of the server (not its resource tracker)."""
        try:
            server = psutil.Process(self.deployment.server.pid)
            return [child for child in server.children() if "spawn_main" in " ".join(child.cmdline())]
        except psutil.Error:  # the server is restarting
            return []

    def wait_for_worker(self, without: int | None, within_s: float = 30.0) -> list[psutil.Process]:
        """The worker processes but `without`, once there is one (a restarted server's worker takes seconds)."""
        deadline = time.monotonic() + within_s
        while True:
            workers = [process for process in self.worker_processes() if process.pid != without]
            if workers or time.monotonic() > deadline:
                return workers
            time.sleep(0.5)

    def kill_one(self, rng: random.Random, stop: threading.Event) -> None:
        workers = self.wait_for_worker(without=None)
        if not workers:
            self.rec.chaos_event("worker kill skipped", why="no worker process within 30 s")
            return
        victim = rng.choice(workers)
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim.pid, signal.SIGKILL)
        self.rec.chaos_event("worker killed", pid=victim.pid)
        fresh = self.wait_for_worker(without=victim.pid)
        if fresh:
            self.rec.chaos_event("worker restarted", pid=fresh[0].pid, by="serve")
        else:
            self.rec.chaos_event("worker not replaced", within_s=30)

    def ensure_running(self) -> None:
        """Nothing to do: the server restarts its worker, and the worker lives as long as the server."""


class SeparateWorkers:
    """`count` `lifelong worker` processes: a killed one (its whole process group) is started again."""

    description = "SIGKILL of a whole `lifelong worker` process group, then a new one started"

    def __init__(self, deployment: Deployment, rec: Recorder, count: int) -> None:
        self.deployment, self.rec = deployment, rec
        self.processes = [deployment.worker, *(self.spawn(i) for i in range(1, count))]

    def spawn(self, index: int) -> subprocess.Popen:
        # Deployment's own spawner: the same environment and log folder, and its shutdown kills these too.
        return self.deployment._spawn("worker", "--loglevel=INFO", f"--hostname=soak{index}@%h")

    def replace(self, index: int, stop: threading.Event | None = None) -> None:
        old = self.processes[index]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(old.pid, signal.SIGKILL)
        old.wait(timeout=30)
        if stop is not None and stop.is_set():  # interrupted: a process started now could outlive the shutdown
            return
        self.processes[index] = self.spawn(index)
        self.deployment.worker = self.processes[0]  # so a server restart starts no third worker
        self.rec.chaos_event("worker restarted", index=index, pid=self.processes[index].pid)

    def kill_one(self, rng: random.Random, stop: threading.Event) -> None:
        index = rng.randrange(len(self.processes))
        self.rec.chaos_event("worker killed", index=index, pid=self.processes[index].pid)
        self.replace(index, stop)

    def ensure_running(self) -> None:
        for index, process in enumerate(self.processes):
            if process.poll() is not None:
                self.rec.chaos_event("worker found dead", index=index, returncode=process.returncode)
                self.replace(index)


def restart_server(deployment: Deployment, rec: Recorder, stop: threading.Event) -> None:
    """SIGTERM and a new `serve` on the same port (Deployment.restart_server), SIGKILL if it will not stop."""
    started, old = time.monotonic(), deployment.server
    forced = False
    try:
        deployment.stop_server()
    except subprocess.TimeoutExpired:
        forced = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(old.pid, signal.SIGKILL)
        old.wait(timeout=30)
    if stop.is_set():  # interrupted: a server started now could outlive the shutdown
        return
    deployment.start()  # logs to a new file: the old process stays in deployment.processes, as restart_server's
    rec.chaos_event("server restarted", seconds=round(time.monotonic() - started, 1), forced_kill=forced)


def chaos_loop(deployment: Deployment, workers: EmbeddedWorkers | SeparateWorkers, rec: Recorder,
               stop: threading.Event, *, load_deadline: float, kill_every_s: float, restart_at: float,
               rng: random.Random) -> None:
    next_kill, restarted = time.monotonic() + kill_every_s, False
    while not stop.wait(0.5) and time.monotonic() < load_deadline:
        try:
            if not restarted and time.monotonic() >= restart_at:
                restarted = True
                restart_server(deployment, rec, stop)
            if time.monotonic() >= next_kill:
                next_kill += kill_every_s
                workers.kill_one(rng, stop)
        except (DeploymentError, subprocess.SubprocessError, OSError) as exc:
            # A server that will not come back ends the load: there is nothing left to measure.
            rec.chaos_event("chaos failed", error=f"{type(exc).__name__}: {exc}")
            stop.set()
