"""The drain after the load: wait until no agent has a queue lag and no forget job is active, at most
`--drain-timeout-s`; sooner if SQL shows nothing left to learn while the API's queue_lag stays up."""

from __future__ import annotations

import time
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from bench.deployment import Deployment
from memory.schema import Event, ForgetJob

ACTIVE_JOB_STATUSES = ("queued", "replaying")
DRAIN_POLL_S = 2.0
# The API's queue_lag may never reach 0 while the workers have nothing left (a count that is wrong): after this
# many polls with no pending event and no active forget job in SQL, the drain ends anyway and says so.
DRAIN_QUIET_POLLS = 3


def api_queue_lags(deployment: Deployment) -> dict[int, int] | None:
    """Every agent's queue_lag as the API reports it (all pages); None if the server did not answer."""
    lags: dict[int, int] = {}
    params: dict[str, Any] = {"limit": 500}
    try:
        with deployment.client(deployment.admin_key) as http:
            for _ in range(100):
                page = http.get("/v1/agents", params=params, timeout=30).raise_for_status().json()
                lags.update({row["id"]: row["queue_lag"] for row in page["data"]})
                if not page["next_cursor"]:
                    return lags
                params["cursor"] = page["next_cursor"]
    except httpx.HTTPError:
        return None
    return lags


def sql_backlog(sessions: sessionmaker[Session]) -> tuple[int, int]:
    """(events the workers would still learn, active forget jobs), read in SQL."""
    with sessions() as db:
        pending = db.scalar(select(func.count()).select_from(Event).where(
            Event.learned_at.is_(None), Event.failed_reason.is_(None), Event.forgotten_at.is_(None)))
        jobs = db.scalar(select(func.count()).select_from(ForgetJob).where(ForgetJob.status.in_(ACTIVE_JOB_STATUSES)))
    return pending, jobs


def drain(deployment: Deployment, sessions: sessionmaker[Session], timeout_s: float) -> dict:
    """Wait until no agent has a queue lag and no forget job is active (bounded by `timeout_s`)."""
    started = time.monotonic()
    quiet, lags, pending, jobs, why = 0, None, -1, -1, "timeout"
    while time.monotonic() - started < timeout_s:
        lags = api_queue_lags(deployment)
        pending, jobs = sql_backlog(sessions)
        if lags is not None and not any(lags.values()) and jobs == 0:
            why = "drained"
            break
        quiet = quiet + 1 if pending == 0 and jobs == 0 else 0
        if quiet >= DRAIN_QUIET_POLLS:
            why = "api queue_lag stays above 0 with no pending event and no active forget job in SQL"
            break
        time.sleep(DRAIN_POLL_S)
    return {"drained": why == "drained", "ended": why, "seconds": round(time.monotonic() - started, 1),
            "api_queue_lag_left": {str(k): v for k, v in (lags or {}).items() if v},
            "sql_pending_events": pending, "active_forget_jobs": jobs,
            "sql_forgotten_never_learned": forgotten_unlearned(sessions)}


def forgotten_unlearned(sessions: sessionmaker[Session]) -> dict[str, int]:
    """Per agent, events forgotten before they were learned: no worker will ever learn them (beside queue_lag)."""
    with sessions() as db:
        rows = db.execute(select(Event.agent_id, func.count()).where(
            Event.forgotten_at.is_not(None), Event.learned_at.is_(None), Event.failed_reason.is_(None))
            .group_by(Event.agent_id)).all()
    return {str(agent_id): count for agent_id, count in rows}
