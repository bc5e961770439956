"""Per-agent weight versions: the learned parameters only, as safetensors in SQL, an overlay on the base.

Version 0 is the agent's base checkpoint itself (no row). Every later version stores the full values
of the parameters learning may change, never the rest of the model. Values rather than differences:
base + (w - base) is not w in floating point, and a rollback must restore weights bit for bit.
A rollback publishes a new version carrying an old one's weights, so the newest version is always
the current one and serving processes watch a single number.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from memory.schema import WeightVersion


class VersionNotFound(LookupError):
    """A version that was never published for this agent, or was pruned."""


@dataclass(frozen=True)
class VersionInfo:
    version: int
    parent_version: int | None
    events_learned_through: int  # highest event id the weights include
    tag: str | None
    created_at: datetime


def encode_weights(tensors: Mapping[str, torch.Tensor]) -> bytes:
    return save_tensors({name: t.detach().to("cpu").contiguous() for name, t in tensors.items()},
                        metadata={"format": "lifelong.overlay"})


def decode_weights(blob: bytes) -> dict[str, torch.Tensor]:
    return load_tensors(blob) if blob else {}


def latest_version(db: Session, agent_id: int) -> int:
    """The agent's current version (0: the base checkpoint); one indexed query, cheap enough per request."""
    return db.scalar(select(func.max(WeightVersion.version)).where(WeightVersion.agent_id == agent_id)) or 0


def list_versions(db: Session, agent_id: int) -> list[VersionInfo]:
    """Kept versions, newest first."""
    rows = db.execute(
        select(WeightVersion.version, WeightVersion.parent_version, WeightVersion.events_learned_through,
               WeightVersion.tag, WeightVersion.created_at)
        .where(WeightVersion.agent_id == agent_id).order_by(WeightVersion.version.desc())
    )
    return [VersionInfo(*row) for row in rows]


def load_weights(db: Session, agent_id: int, version: int) -> dict[str, torch.Tensor]:
    """The overlay of `version` ({} for version 0, the base)."""
    if version == 0:
        return {}
    blob = db.scalar(select(WeightVersion.weights).where(WeightVersion.agent_id == agent_id,
                                                         WeightVersion.version == version))
    if blob is None:
        raise VersionNotFound(f"agent {agent_id} has no version {version} (never published, or pruned)")
    return decode_weights(blob)


def publish_version(db: Session, *, agent_id: int, weights: Mapping[str, torch.Tensor], parent_version: int,
                    events_learned_through: int, tag: str | None = None) -> int:
    """Add the next version in the caller's transaction; (agent_id, version) is unique, so two
    concurrent publishers cannot both commit the same number."""
    version = latest_version(db, agent_id) + 1
    db.add(WeightVersion(agent_id=agent_id, version=version, parent_version=parent_version, tag=tag,
                         weights=encode_weights(weights), events_learned_through=events_learned_through))
    db.flush()
    return version


def rollback(db: Session, *, agent_id: int, to_version: int) -> int:
    """Make `to_version`'s weights current again, as a new version; returns its number.

    Events learned since stay learned (the log is not replayed) and their memories stay stored;
    only the weights go back.
    """
    latest = latest_version(db, agent_id)
    if to_version == 0:
        blob = encode_weights({})
    else:
        blob = db.scalar(select(WeightVersion.weights).where(WeightVersion.agent_id == agent_id,
                                                             WeightVersion.version == to_version))
        if blob is None:
            raise VersionNotFound(f"agent {agent_id} has no version {to_version} to roll back to")
    through = db.scalar(select(WeightVersion.events_learned_through).where(
        WeightVersion.agent_id == agent_id, WeightVersion.version == latest)) or 0
    db.add(WeightVersion(agent_id=agent_id, version=latest + 1, parent_version=to_version, weights=blob,
                         events_learned_through=through, tag=None))
    db.flush()
    return latest + 1


def tag_version(db: Session, *, agent_id: int, version: int, tag: str | None) -> None:
    """Tag a version (kept by pruning) or untag it with None."""
    row = db.scalar(select(WeightVersion).where(WeightVersion.agent_id == agent_id, WeightVersion.version == version))
    if row is None:
        raise VersionNotFound(f"agent {agent_id} has no version {version} to tag")
    row.tag = tag


def prune_versions(db: Session, *, agent_id: int, keep: int) -> int:
    """Delete all but the newest `keep` versions, sparing tagged ones; returns how many went."""
    if keep < 1:
        raise ValueError("keep at least one version (the current one)")
    newest = select(WeightVersion.version).where(WeightVersion.agent_id == agent_id) \
        .order_by(WeightVersion.version.desc()).limit(keep)
    kept = set(db.scalars(newest))
    result = db.execute(delete(WeightVersion).where(
        WeightVersion.agent_id == agent_id, WeightVersion.tag.is_(None), WeightVersion.version.not_in(kept)))
    return result.rowcount
