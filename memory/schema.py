"""Everything durable, as SQLAlchemy 2.x typed models. SQL is the source of truth.

Works on SQLite (the embedded default) and PostgreSQL. Ids that FAISS derives
from (memories) use AUTOINCREMENT on SQLite so they are never reused after a delete.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# SQLite only auto-increments INTEGER PRIMARY KEY columns; BIGINT stays BIGINT elsewhere.
BigId = BigInteger().with_variant(Integer(), "sqlite")
# The largest id (and BIGINT) SQL holds: larger numbers from outside are refused before SQL sees them.
MAX_ID = 2**63 - 1


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite would hand back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: give a timezone-aware one")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class Agent(Base):
    __tablename__ = "agents"
    __table_args__ = ({"sqlite_autoincrement": True},)  # ids are never reused (migration 0005)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    base_checkpoint: Mapped[str] = mapped_column(String(500))  # directory or preset the agent starts from
    learning_settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"
    __table_args__ = ({"sqlite_autoincrement": True},)  # ids are never reused (migration 0005)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex; the key itself is never stored
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), index=True)  # None: admin
    name: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class StreamSession(Base):
    """A chat session or a document stream: one ordered stream of events an agent reads."""

    __tablename__ = "sessions"
    __table_args__ = (Index("ix_sessions_agent_transcript", "agent_id", "transcript_digest"),
                      {"sqlite_autoincrement": True})  # ids are never reused (migration 0005)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # "chat" or "stream"
    state: Mapped[bytes | None] = mapped_column(LargeBinary)  # models.State.to_bytes() after the last event
    position: Mapped[int] = mapped_column(BigInteger, default=0)  # tokens the state has read
    events_read: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # events the state has read
    next_seq: Mapped[int] = mapped_column(Integer, default=0)  # sequence number of the next event
    # The learner's own stream state: it reads with the weights of its time, so it is not `state`.
    learn_state: Mapped[bytes | None] = mapped_column(LargeBinary)  # after every learned token but the last
    learn_last_token: Mapped[int | None] = mapped_column(Integer)  # that last token: the next chunk's first input
    # A conversation begun through the OpenAI API: a digest of its log so far, seeded with the key that began
    # it, by which a client sending the whole history finds it again (memory.eventlog.transcript_digest).
    transcript_digest: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow, onupdate=utcnow)


class Event(Base):
    """The append-only log of everything an agent was told or said."""

    __tablename__ = "events"
    __table_args__ = (UniqueConstraint("session_id", "seq"), Index("ix_events_agent_learned", "agent_id", "learned_at"),
                      {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    document_id: Mapped[int | None] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)  # order within the session
    role: Mapped[str] = mapped_column(String(16))  # user, assistant, system, document
    content: Mapped[bytes] = mapped_column(LargeBinary)  # raw bytes, exactly as received
    byte_offset: Mapped[int] = mapped_column(BigInteger)  # offset of `content` in the session's byte stream
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    learned_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    learned_bits: Mapped[float | None] = mapped_column(Float)  # prequential score: bits before learning from it
    failed_reason: Mapped[str | None] = mapped_column(Text)
    # Set when a forget with weights named it: its memories are gone and it is never learned again
    # (a replay re-learns everything after it but it, learner.replay).
    forgotten_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # Memory id (as text) -> positions of this event whose prediction that memory supplied (memory.hits), as
    # added to its hit_count; a forget's replay takes them back and adds its own. A batch's land on its last event.
    hits: Mapped[dict[str, int] | None] = mapped_column(JSON(none_as_null=True))


class Document(Base):
    __tablename__ = "documents"
    __table_args__ = ({"sqlite_autoincrement": True},)  # ids are never reused (migration 0005)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(500), default="")
    content_type: Mapped[str] = mapped_column(String(100), default="text/plain")
    # receiving, queued, learning, learned, failed, forgotten
    status: Mapped[str] = mapped_column(String(16), default="receiving")
    bytes_received: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_processed: Mapped[int] = mapped_column(BigInteger, default=0)
    # Unused: documents arrive as chunk events (workers.submit.DocumentUpload); kept so older
    # databases need no migration.
    content: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    failed_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow, onupdate=utcnow)


class Memory(Base):
    """One span (a chunk of up to MAX_SPAN_TOKENS tokens) of retrieval (key, value) pairs."""

    __tablename__ = "memories"
    __table_args__ = (Index("ix_memories_agent_id_id", "agent_id", "id"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    event_id: Mapped[int | None] = mapped_column(ForeignKey("events.id", ondelete="SET NULL"), index=True)
    document_id: Mapped[int | None] = mapped_column(ForeignKey("documents.id", ondelete="SET NULL"), index=True)
    session_id: Mapped[int | None] = mapped_column(ForeignKey("sessions.id", ondelete="SET NULL"), index=True)
    imported_from: Mapped[str | None] = mapped_column(String(200))  # provenance of imported rows
    byte_start: Mapped[int] = mapped_column(BigInteger)  # span in the source's byte stream
    byte_end: Mapped[int] = mapped_column(BigInteger)
    token_start: Mapped[int | None] = mapped_column(BigInteger)  # stream position of its first pair, if recorded
    text: Mapped[str] = mapped_column(Text)  # the span's bytes as UTF-8, invalid bytes replaced
    num_tokens: Mapped[int] = mapped_column(Integer)
    head_dim: Mapped[int] = mapped_column(Integer)
    # In `pair_format` (memory.pair_format; NULL: "fp16"): fp16 (num_tokens, head_dim), little-endian, or an
    # imported model's (num_tokens, channels, head_dim), every memory layer's pairs of each token together
    # (models.layer_memory); or "keys8:<channels>": those channels' keys as int8 codes, and no values (b"").
    keys: Mapped[bytes] = mapped_column(LargeBinary)
    values: Mapped[bytes] = mapped_column(LargeBinary)
    pair_format: Mapped[str | None] = mapped_column(String(200))
    weight_version: Mapped[int] = mapped_column(Integer, default=0)  # version whose weights produced the pairs
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow, index=True)
    hit_count: Mapped[int] = mapped_column(BigInteger, default=0)
    last_hit_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class MemoryTombstone(Base):
    """Deleted memory ids, in order, so every process's index can drop them when it catches up."""

    __tablename__ = "memory_tombstones"
    __table_args__ = (Index("ix_memory_tombstones_agent_id_id", "agent_id", "id"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    agent_id: Mapped[int] = mapped_column(BigInteger)  # no FK: tombstones outlive nothing but must not block deletes
    memory_id: Mapped[int] = mapped_column(BigInteger)
    deleted_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class WeightVersion(Base):
    __tablename__ = "weight_versions"
    __table_args__ = (UniqueConstraint("agent_id", "version"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    parent_version: Mapped[int | None] = mapped_column(Integer)
    # safetensors of the learned parameters only, an overlay on the agent's base checkpoint. In SQL so that
    # publishing a version commits in the same transaction as the events it learned.
    weights: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    events_learned_through: Mapped[int] = mapped_column(BigInteger, default=0)  # highest event id included
    tag: Mapped[str | None] = mapped_column(String(200))  # tagged versions are kept when pruning
    # sha256 of the learned tensors (learner.versions.weights_sha256): two agents' weights compare by it.
    sha256: Mapped[str | None] = mapped_column(String(64))
    # The behavioural gate's verdict when one fell due in this version's batch (learner.gate.Verdict.record).
    gate: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class StreamCheckpoint(Base):
    """A session's learner stream state after one of its learned events.

    Written at every version kept for replays (every LIFELONG_KEEP_VERSION_EVERY-th), for the sessions that
    learned since their last one, and by a replay's publish; pruned with the versions, keeping, for each kept
    version, every session's newest state at or before its last event. A replay starts from such a version
    and needs exactly those: the sessions' states are part of what the weights read.
    """

    __tablename__ = "stream_checkpoints"
    __table_args__ = (Index("ix_stream_checkpoints_agent_event", "agent_id", "event_id"),
                      UniqueConstraint("session_id", "event_id"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    event_id: Mapped[int] = mapped_column(BigInteger)  # the session's last event the state has learned
    learn_state: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    learn_last_token: Mapped[int] = mapped_column(Integer)


class ForgetJob(Base):
    """Forgetting that reaches the weights: roll back to before the earliest forgotten event, re-learn the rest.

    status: queued -> replaying -> done | failed. While one is queued or replaying, its agent learns
    nothing new (new events wait and are learned after it, in order). The replay's progress is
    checkpointed here (weights) and in forget_job_streams (session states), so a killed worker resumes it.
    """

    __tablename__ = "forget_jobs"
    __table_args__ = (Index("ix_forget_jobs_agent_status", "agent_id", "status"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    first_event_id: Mapped[int] = mapped_column(BigInteger)  # the earliest forgotten event that had been learned
    from_version: Mapped[int | None] = mapped_column(Integer)  # the kept version the replay starts from
    from_event_id: Mapped[int | None] = mapped_column(BigInteger)  # that version's last learned event
    replayed_through: Mapped[int | None] = mapped_column(BigInteger)  # last event re-learned so far (checkpointed)
    checkpoint_weights: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)  # at replayed_through
    events_total: Mapped[int] = mapped_column(Integer, default=0)
    events_done: Mapped[int] = mapped_column(Integer, default=0)
    bytes_total: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_done: Mapped[int] = mapped_column(BigInteger, default=0)
    result_version: Mapped[int | None] = mapped_column(Integer)  # the version it published
    failed_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class ForgetJobStream(Base):
    """A replay's learner stream state of one session at the job's checkpoint."""

    __tablename__ = "forget_job_streams"

    job_id: Mapped[int] = mapped_column(ForeignKey("forget_jobs.id", ondelete="CASCADE"), primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True)
    learn_state: Mapped[bytes | None] = mapped_column(LargeBinary)
    learn_last_token: Mapped[int | None] = mapped_column(Integer)


# The lexical index (migration 0008, memory.lexical): made by each database's own SQL, so not declared here.
LEXICAL_INDEX_OBJECTS = ("memories_fts", "ix_memories_text_words")


def declared_here(name: str | None, type_: str, parent_names: dict) -> bool:
    """Whether a database object is one of these models' (Alembic's `include_name`): not the lexical index's."""
    return not (name or "").startswith(LEXICAL_INDEX_OBJECTS)
