"""Rows written in an older pair format, rewritten in place in the store's (memory.pair_format).

A row keeps its id, text and provenance: only its bytes change, to exactly what the store would have written
(and what every store already reads of it, `MemoryStore.held`), so no search anywhere changes and no index is
touched. Batches commit one by one, so the work resumes where a killed worker left it, and a row deleted
meanwhile is simply not there to rewrite.
"""

from __future__ import annotations

import logging

from sqlalchemy import func, or_, select, update

from memory.pair_format import FULL_PAIRS
from memory.schema import Memory
from memory.store import MemoryStore

log = logging.getLogger(__name__)

BATCH_ROWS = 32  # a row of an imported model's fp16 pairs is up to a few megabytes


def reencode_rows(store: MemoryStore, *, batch_rows: int = BATCH_ROWS) -> int:
    """Rewrite the agent's rows of another format in `store`'s; returns how many were rewritten. Rows that lack
    what the store keeps (keys-only rows, for a store that reads values) are left as they are. Rows from before
    formats (NULL) are fp16 ones, and say so afterwards: a worker's start asks for this for agents that have any."""
    target = store.pair_format.name
    if store.pair_format == FULL_PAIRS:  # every other format keeps less: nothing to rewrite into it
        with store.sessions.begin() as db:
            db.execute(update(Memory).where(Memory.agent_id == store.agent_id, Memory.pair_format.is_(None))
                       .values(pair_format=target))
        return 0
    other = (Memory.agent_id == store.agent_id, or_(Memory.pair_format.is_(None), Memory.pair_format != target))
    with store.sessions() as db:
        total = db.scalar(select(func.count()).select_from(Memory).where(*other))
    done, after = 0, 0
    while True:
        with store.sessions.begin() as db:
            rows = db.execute(select(Memory.id, Memory.keys, Memory.values, Memory.pair_format, Memory.num_tokens)
                              .where(*other, Memory.id > after).order_by(Memory.id).limit(batch_rows)).all()
            if not rows:
                break
            for row in rows:
                encoded = store.encoded(bytes(row.keys), bytes(row.values), row.pair_format, row.num_tokens)
                if encoded is not None:
                    done += db.execute(update(Memory).where(Memory.id == row.id).values(
                        keys=encoded[0], values=encoded[1], pair_format=target)).rowcount
            after = rows[-1].id
        log.info("agent %s: memories re-encoded as %s: %d of %d", store.agent_id, target, done, total)
    return done
