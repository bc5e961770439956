"""The errors in the deployment's process logs: tracebacks and ERROR lines, grouped by the exception, those the
chaos causes by design marked (and ranked last)."""

from __future__ import annotations

import re
from pathlib import Path

# What the chaos makes Celery log by design: a killed process (a task goes back to the queue), and the embedded
# worker, which the server's SIGTERM to its process group reaches directly.
EXPECTED_FROM_CHAOS = ("WorkerLostError", "signal 9", "SIGKILL", "signal 15 (SIGTERM)")


def shortened(lines: list[str], limit: int = 1500) -> str:
    """A log excerpt within `limit` characters: its first line (what failed) and its end (the exception)."""
    text = "\n".join(lines)
    return text if len(text) <= limit else f"{lines[0][:200]}\n  ...\n{text[-(limit - 210):]}"


def log_errors(folder: Path, limit: int = 10) -> dict:
    """Tracebacks and ERROR lines of every process's log, grouped by their last line (the exception)."""
    groups: dict[str, dict] = {}
    for path in sorted(folder.glob("*.log")):
        lines = path.read_text(errors="replace").splitlines()
        number = 0
        while number < len(lines):
            line = lines[number]
            if not (line.startswith("Traceback") or " ERROR" in line or line.startswith("ERROR")):
                number += 1
                continue
            end = number + 1
            if not line.startswith("Traceback") and end < len(lines) and lines[end].startswith("Traceback"):
                end += 1  # a logged exception: its message line, then its traceback
            if lines[end - 1].startswith("Traceback"):  # to the exception's line: the first one not indented after it
                while end < len(lines) and (lines[end].startswith((" ", "\t")) or not lines[end].strip()
                                            or lines[end].startswith(("During handling", "The above", "Traceback"))):
                    end += 1
                end = min(end + 1, len(lines))
            excerpt = lines[number:end]
            key = re.sub(r"\d+", "N", excerpt[-1][:200])  # one group for the same failure of other ids
            group = groups.setdefault(key, {"file": path.name, "line": number + 1, "occurrences": 0,
                                            "excerpt": shortened(excerpt)})
            group["occurrences"] += 1
            number = end
    ranked = sorted(groups.values(), key=lambda g: any(m in g["excerpt"] for m in EXPECTED_FROM_CHAOS))
    for group in ranked:
        group["expected_from_chaos"] = any(marker in group["excerpt"] for marker in EXPECTED_FROM_CHAOS)
    return {"distinct": len(groups), "occurrences": sum(g["occurrences"] for g in groups.values()),
            "groups": ranked[:limit]}
