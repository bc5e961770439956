"""Per-agent weight versions: the learned parameters only, as safetensors in SQL, an overlay on the base.

Version 0 is the agent's base checkpoint itself (no row). Every later version stores the full values
of the parameters learning may change, never the rest of the model. Values rather than differences:
base + (w - base) is not w in floating point, and a rollback must restore weights bit for bit.
A rollback publishes a new version carrying an old one's weights, so the newest version is always
the current one and serving processes watch a single number.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from memory.schema import StreamCheckpoint, WeightVersion


class VersionNotFound(LookupError):
    """A version that was never published for this agent, or was pruned."""


@dataclass(frozen=True)
class VersionInfo:
    version: int
    parent_version: int | None
    events_learned_through: int  # highest event id the weights include
    tag: str | None
    created_at: datetime
    sha256: str | None  # of the stored tensors (`weights_sha256`); equal weights, equal digests


def encode_weights(tensors: Mapping[str, torch.Tensor]) -> bytes:
    return save_tensors({name: t.detach().to("cpu").contiguous() for name, t in tensors.items()},
                        metadata={"format": "lifelong.overlay"})


def decode_weights(blob: bytes) -> dict[str, torch.Tensor]:
    return load_tensors(blob) if blob else {}


def weights_sha256(blob: bytes) -> str:
    """The digest of a version's learned tensors: the sha256 of their stored encoding, which is a function
    of the tensors' names, dtypes, shapes and bytes alone (safetensors orders them itself; no timestamp)."""
    return hashlib.sha256(blob).hexdigest()


def latest_version(db: Session, agent_id: int) -> int:
    """The agent's current version (0: the base checkpoint); one indexed query, cheap enough per request."""
    return db.scalar(select(func.max(WeightVersion.version)).where(WeightVersion.agent_id == agent_id)) or 0


def list_versions(db: Session, agent_id: int) -> list[VersionInfo]:
    """Kept versions, newest first."""
    rows = db.execute(
        select(WeightVersion.version, WeightVersion.parent_version, WeightVersion.events_learned_through,
               WeightVersion.tag, WeightVersion.created_at, WeightVersion.sha256)
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
                    events_learned_through: int, tag: str | None = None, gate: dict | None = None) -> int:
    """Add the next version in the caller's transaction; (agent_id, version) is unique, so two
    concurrent publishers cannot both commit the same number. `gate`: the verdict of a gate that fell due
    (learner.gate.Verdict.record)."""
    version = latest_version(db, agent_id) + 1
    blob = encode_weights(weights)
    db.add(WeightVersion(agent_id=agent_id, version=version, parent_version=parent_version, tag=tag,
                         weights=blob, sha256=weights_sha256(blob), events_learned_through=events_learned_through,
                         gate=gate))
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
                         sha256=weights_sha256(blob), events_learned_through=through, tag=None))
    db.flush()
    return latest + 1


def tag_version(db: Session, *, agent_id: int, version: int, tag: str | None) -> None:
    """Tag a version (kept by pruning) or untag it with None."""
    row = db.scalar(select(WeightVersion).where(WeightVersion.agent_id == agent_id, WeightVersion.version == version))
    if row is None:
        raise VersionNotFound(f"agent {agent_id} has no version {version} to tag")
    row.tag = tag


def prune_versions(db: Session, *, agent_id: int, keep: int, keep_every: int = 0) -> int:
    """Delete all but the newest `keep` versions, sparing tagged ones and, with `keep_every` N > 0, every
    N-th version (a replay checkpoint: a forget replays from the newest kept version before what it
    forgets, so at most about N learning batches more than it must); returns how many went.

    Stream checkpoints that no kept version needs go with them (`prune_stream_checkpoints`)."""
    if keep < 1:
        raise ValueError("keep at least one version (the current one)")
    newest = select(WeightVersion.version).where(WeightVersion.agent_id == agent_id) \
        .order_by(WeightVersion.version.desc()).limit(keep)
    kept = set(db.scalars(newest))
    doomed = (WeightVersion.agent_id == agent_id, WeightVersion.tag.is_(None), WeightVersion.version.not_in(kept))
    if keep_every > 0:
        doomed += (WeightVersion.version % keep_every != 0,)
    result = db.execute(delete(WeightVersion).where(*doomed))
    if result.rowcount:
        prune_stream_checkpoints(db, agent_id=agent_id)
    return result.rowcount


def prune_stream_checkpoints(db: Session, *, agent_id: int) -> int:
    """Delete the stream checkpoints no kept version needs; returns how many went.

    A replay from version V restores every session's newest state at or before V's last learned event,
    so for each kept version (and the current states: the newest per session) those stay."""
    throughs = sorted(set(db.scalars(select(WeightVersion.events_learned_through)
                                     .where(WeightVersion.agent_id == agent_id))))
    per_session: dict[int, list[tuple[int, int]]] = {}
    for row_id, session_id, event_id in db.execute(
            select(StreamCheckpoint.id, StreamCheckpoint.session_id, StreamCheckpoint.event_id)
            .where(StreamCheckpoint.agent_id == agent_id).order_by(StreamCheckpoint.event_id)):
        per_session.setdefault(session_id, []).append((event_id, row_id))
    doomed = []
    for rows in per_session.values():
        events = [event_id for event_id, _ in rows]
        needed = {len(rows) - 1}
        for through in throughs:
            at = bisect.bisect_right(events, through) - 1
            if at >= 0:
                needed.add(at)
        doomed += [row_id for index, (_, row_id) in enumerate(rows) if index not in needed]
    if doomed:
        db.execute(delete(StreamCheckpoint).where(StreamCheckpoint.id.in_(doomed)))
    return len(doomed)
