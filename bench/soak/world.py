"""What the clients share between their threads: the agents they made, their sessions, documents and events, the
agents they deleted, and the turns the API acknowledged (which the audit looks for in the database)."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field

# Agents alive at once: enough that deletes race with work on them, few enough that each sees traffic.
INITIAL_AGENTS = 6
MIN_AGENTS = 3
MAX_AGENTS = 12


@dataclass
class AgentEntry:
    id: int
    name: str
    sessions: list[int] = field(default_factory=list)
    documents: list[int] = field(default_factory=list)
    user_events: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Turn:
    """A chat turn the API acknowledged (2xx): its events must be in the session's log."""

    agent_id: int
    session_id: int
    user_event_id: int
    reply_event_id: int
    content: str


class World:
    """The agents, sessions, documents and acknowledged turns the clients made, shared between their threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.agents: dict[int, AgentEntry] = {}
        self.deleted: set[int] = set()  # the API answered 204
        self.delete_unknown: set[int] = set()  # the delete got no clear answer: the audit skips them
        self.turns: list[Turn] = []
        self.created = 0

    def add(self, agent: AgentEntry) -> None:
        with self.lock:
            self.agents[agent.id] = agent
            self.created += 1

    def live_count(self) -> int:
        with self.lock:
            return len(self.agents)

    def pick(self, rng: random.Random) -> AgentEntry | None:
        with self.lock:
            return self.agents[rng.choice(sorted(self.agents))] if self.agents else None

    def take_for_delete(self, rng: random.Random) -> AgentEntry | None:
        """An agent no client picks from now on (those already working on it race with the delete, on purpose)."""
        with self.lock:
            if len(self.agents) <= MIN_AGENTS:
                return None
            return self.agents.pop(rng.choice(sorted(self.agents)))

    def settle_delete(self, agent: AgentEntry, status: int | None) -> None:
        with self.lock:
            if status == 204:
                self.deleted.add(agent.id)
            elif status is not None and status < 500:  # refused: still alive
                self.agents[agent.id] = agent
            else:
                self.delete_unknown.add(agent.id)

    def remember(self, agent: AgentEntry, *, session: int | None = None, document: int | None = None,
                 turn: Turn | None = None) -> None:
        with self.lock:
            if session is not None and session not in agent.sessions:
                agent.sessions.append(session)
            if document is not None:
                agent.documents.append(document)
            if turn is not None:
                self.turns.append(turn)
                agent.user_events.append(turn.user_event_id)

    def choose(self, rng: random.Random, items: list[int]) -> int | None:
        with self.lock:
            return rng.choice(items) if items else None

    def summary(self) -> dict:
        with self.lock:
            return {"agents_created": self.created, "agents_deleted": len(self.deleted),
                    "agents_delete_unanswered": len(self.delete_unknown), "agents_left": len(self.agents),
                    "turns_acknowledged": len(self.turns)}
