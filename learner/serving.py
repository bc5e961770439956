"""The serving side of weight versions: a model that follows its agent's newest version without a restart.

Between requests, `refresh()` asks SQL for the agent's newest version number (one indexed query) and,
when it moved, builds the new weights beside the old ones and swaps one reference. A request that
took `current()` before the swap finishes on the weights it started with; none is dropped or sees a
half-updated model.
"""

from __future__ import annotations

import copy
import threading
from typing import NamedTuple

import torch
from sqlalchemy.orm import Session, sessionmaker

from learner.versions import latest_version, load_weights
from models import HybridLM


class Loaded(NamedTuple):
    model: HybridLM
    version: int


class ServingModel:
    """One agent's model for serving: the base checkpoint plus the newest learned overlay."""

    def __init__(self, *, sessions: sessionmaker[Session], agent_id: int, base: HybridLM):
        self.sessions = sessions
        self.agent_id = agent_id
        self._base = base.eval()
        self._current = Loaded(base, 0)
        self._swap_lock = threading.Lock()  # one build at a time; readers never wait for it
        self.refresh()

    def current(self) -> Loaded:
        """The model and version to use for one whole request."""
        return self._current

    @property
    def version(self) -> int:
        return self._current.version

    def refresh(self) -> bool:
        """Swap to the agent's newest version if it moved; returns whether it did."""
        with self.sessions() as db:
            newest = latest_version(db, self.agent_id)
        if newest == self._current.version:
            return False
        with self._swap_lock:
            with self.sessions() as db:
                # Read again with the weights: a version seen a moment ago may have been pruned since.
                newest = latest_version(db, self.agent_id)
                if newest == self._current.version:
                    return False
                weights = load_weights(db, self.agent_id, newest)
            self._current = Loaded(self._build(weights), newest)
        return True

    @torch.no_grad()
    def _build(self, weights: dict[str, torch.Tensor]) -> HybridLM:
        if not weights:
            return self._base
        model = copy.deepcopy(self._base)
        params = dict(model.named_parameters())
        unknown = sorted(set(weights) - set(params))
        if unknown:
            raise ValueError(f"version weights name parameters this base model lacks: {unknown[:5]}")
        for name, tensor in weights.items():
            params[name].copy_(tensor)
        return model.eval()
