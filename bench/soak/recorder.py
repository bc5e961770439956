"""What the clients saw, gathered from every thread: statuses, latencies, failures, and what the chaos did.

`Recorder.summary()` is a deployment's part of the report: requests by status, the 5xx with examples, connection
errors, timeouts, latency percentiles per operation and the chaos events.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

MAX_EXAMPLES = 20
# A client may still be retrying a little after the restarted server answers /readyz.
RESTART_SLACK_S = 5.0


def log(message: str) -> None:
    print(f"[soak] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


@dataclass
class Recorder:
    """What the clients saw, from every thread: statuses, latencies, failures, and what the chaos did."""

    started: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)
    statuses: Counter = field(default_factory=Counter)
    by_operation: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    server_errors: list[dict] = field(default_factory=list)
    server_error_count: int = 0
    connection_errors: Counter = field(default_factory=Counter)
    connection_error_times: list[float] = field(default_factory=list)
    timeouts: list[dict] = field(default_factory=list)
    in_band: Counter = field(default_factory=Counter)
    in_band_faults: list[dict] = field(default_factory=list)
    in_band_fault_count: int = 0
    client_errors: list[dict] = field(default_factory=list)
    client_error_count: int = 0
    operations: Counter = field(default_factory=Counter)
    chaos: list[dict] = field(default_factory=list)

    def now(self) -> float:
        return round(time.monotonic() - self.started, 1)

    def answered(self, op: str, method: str, path: str, status: int, body: str, elapsed_ms: float | None) -> None:
        with self.lock:
            self.statuses[str(status)] += 1
            self.by_operation[op][str(status)] += 1
            if elapsed_ms is not None:
                self.latencies[op].append(elapsed_ms)
            if status >= 500:
                self.server_error_count += 1
                if len(self.server_errors) < MAX_EXAMPLES:
                    self.server_errors.append({"t_s": self.now(), "op": op, "method": method, "path": path,
                                               "status": status, "body": body[:300]})

    def latency(self, op: str, elapsed_ms: float) -> None:
        with self.lock:
            self.latencies[op].append(elapsed_ms)

    def connection_error(self, op: str, exc: BaseException) -> None:
        with self.lock:
            self.connection_errors[f"{op}: {type(exc).__name__}"] += 1
            self.connection_error_times.append(self.now())

    def timeout(self, op: str, method: str, path: str) -> None:
        with self.lock:
            if len(self.timeouts) < MAX_EXAMPLES:
                self.timeouts.append({"t_s": self.now(), "op": op, "method": method, "path": path})
            self.statuses["timeout"] += 1

    def in_band_error(self, op: str, path: str, code: str, message: str, *, server_fault: bool) -> None:
        """An error inside a 200 answer: an SSE `error` event, or an MCP tool's error."""
        with self.lock:
            self.in_band[f"{op}: {code}"] += 1
            if server_fault:
                self.in_band_fault_count += 1
                if len(self.in_band_faults) < MAX_EXAMPLES:
                    self.in_band_faults.append({"t_s": self.now(), "op": op, "path": path, "code": code,
                                                "message": message[:300]})

    def client_error(self, op: str, exc: BaseException) -> None:
        """An exception the soak itself did not expect (a malformed answer, a bug here)."""
        with self.lock:
            self.client_error_count += 1
            if len(self.client_errors) < MAX_EXAMPLES:
                self.client_errors.append({"t_s": self.now(), "op": op, "error": f"{type(exc).__name__}: {exc}"[:300]})

    def operation(self, name: str) -> None:
        with self.lock:
            self.operations[name] += 1

    def chaos_event(self, what: str, **detail: Any) -> None:
        with self.lock:
            self.chaos.append({"t_s": self.now(), "what": what, **detail})
        log(f"chaos: {what} {detail}")

    def progress(self) -> str:
        with self.lock:
            return (f"t={self.now():.0f}s operations={sum(self.operations.values())} "
                    f"requests={sum(self.statuses.values())} 5xx={self.server_error_count} "
                    f"in_band_faults={self.in_band_fault_count} "
                    f"connection_errors={sum(self.connection_errors.values())} timeouts={self.statuses['timeout']}")

    def outside_restarts(self) -> int:
        """Connection errors not while the server restarted (nor just after): a process died, or the network."""
        windows = [(event["t_s"] - event["seconds"] - 1, event["t_s"] + RESTART_SLACK_S) for event in self.chaos
                   if event["what"] == "server restarted"]
        return sum(not any(low <= t <= high for low, high in windows) for t in self.connection_error_times)

    def summary(self) -> dict:
        with self.lock:
            kinds = Counter(event["what"] for event in self.chaos)
            return {
                "operations": dict(sorted(self.operations.items())),
                "requests_by_status": dict(sorted(self.statuses.items())),
                "requests_by_operation": {op: dict(sorted(c.items())) for op, c in sorted(self.by_operation.items())},
                "5xx": {"count": self.server_error_count, "examples": self.server_errors},
                "in_band_server_faults": {"count": self.in_band_fault_count, "examples": self.in_band_faults},
                "in_band_errors": dict(sorted(self.in_band.items())),
                "connection_errors": {"count": sum(self.connection_errors.values()),
                                      "outside_restarts": self.outside_restarts(),
                                      "by_operation": dict(sorted(self.connection_errors.items()))},
                "timeouts": {"count": self.statuses["timeout"], "examples": self.timeouts},
                "client_errors": {"count": self.client_error_count, "examples": self.client_errors},
                "latency_ms": {op: {"n": len(values), "p50": round(percentile(values, 0.5), 1),
                                    "p99": round(percentile(values, 0.99), 1)}
                               for op, values in sorted(self.latencies.items()) if values},
                "chaos": {"worker_kills": kinds["worker killed"], "worker_restarts": kinds["worker restarted"],
                          "server_restarts": kinds["server restarted"], "events": self.chaos},
            }
