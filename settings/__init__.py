"""The one settings object of the service, read from `LIFELONG_*` environment variables (or `.env`).

Embedded defaults need no external service: an SQLite file and an SQL-backed
Celery transport on a second SQLite file, both under the data directory.
Scale-out sets `LIFELONG_DATABASE_URL` (PostgreSQL) and `LIFELONG_BROKER_URL`
(Redis). It sits below every package (it imports none of them), so the memory store,
the learner, the workers and the API all read it without importing each other.
Reading it creates nothing on disk: directories are made by whoever writes into them.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The shipped base model, found relative to the source tree (an editable install or a checkout).
SHIPPED_CHECKPOINT = Path(__file__).resolve().parent.parent / "checkpoints" / "small"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LIFELONG_", env_file=".env", extra="ignore", frozen=True)

    data_dir: Path = Field(Path("lifelong-data"), description="SQLite files, admin key, snapshots live here")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default: SQLite under data_dir")
    broker_url: str | None = Field(None, description="Celery broker; default: SQL transport under data_dir")
    base_checkpoint: str | None = Field(
        None, description="the default base model of new agents: 'small', an installed model's name "
                          "(`lifelong models list`) or a path; default: smollm2-135m-instruct when installed, "
                          "else small")
    device: str = Field("cpu", description="torch device for serving and learning")
    serving_weights: Literal["int8", "fp32"] = Field(
        "int8", description="imported models' weights when serving: int8 for decoding with a bf16 copy for "
                            "prompts (fp32 where the CPU has no bf16 arithmetic); learning always reads fp32")
    compiled_decode: bool = Field(
        True, description="imported models decode through one compiled, fixed-shape step (models.static_decode): "
                          "2-3x the tokens/s; compiled in the background when a model is loaded (about a minute and "
                          "a half the first time on a 2-core CPU, seconds from the compile cache after), decoding "
                          "as before until then")
    memory_attention: bool = Field(
        False, description="imported models' memory layers also attend to the pairs they retrieve, in serving and "
                           "learning (off by default: it pulls replies toward whatever fills the memory)")
    recall_in_context: bool = Field(
        True, description="before an imported chat model answers, the memories its memory layers recall for the "
                          "message are read into its context as a note (not logged; the session state keeps the log)")
    context_holds_replies: bool = Field(
        False, description="a chat session's context holds the model's own earlier replies (logged and learned "
                           "as context either way); off: a small model copies its replies' phrases turn after "
                           "turn (BENCHMARKS.md, \"A conversation without its own replies\")")
    recall_min_score: float = Field(0.2, ge=0.0, le=1.0, description="the recall score a memory needs to be noted")
    recall_max_bytes: int = Field(1024, ge=0, description="bytes of recalled memories noted per turn")

    admin_key: str | None = Field(None, description="admin API key; default: generated on first start")
    max_message_bytes: int = Field(64 * 1024, gt=0, description="largest chat message accepted (413 beyond)")
    max_reply_bytes: int = Field(64 * 1024, gt=0, description="the longest reply a request's max_tokens may ask for; "
                                 "larger budgets are cut to it (a turn holds its session until it ends)")
    max_document_bytes: int = Field(1 << 30, gt=0, description="largest document stream accepted (413 beyond)")

    memory_ram_bytes: int | None = Field(
        None, ge=0, description="bytes of agents' memories (their pairs and indexes) and cached session states a "
                                "serving process keeps in RAM; past it the agents served least recently are "
                                "unloaded, and loaded again (from their memory snapshot and SQL) when next asked; "
                                "default: no bound")
    memory_nprobe: int | None = Field(
        None, ge=1, description="IVF lists each memory search probes once an agent's memory is large: more finds "
                                "more, slower; default: the index's own (memory.index.IndexConfig)")

    chunk_bytes: int = Field(2048, gt=0, description="bytes per online-learning step")
    snapshot_min_tokens: int = Field(
        65_536, ge=1,
        description="memory pairs an agent stores before its index is first snapshotted for fast restarts; "
                    "snapshotted again at each doubling",
    )
    keep_versions: int = Field(10, ge=1, description="weight versions kept per agent, tagged ones aside")
    keep_version_every: int = Field(
        64, ge=0,
        description="also keep every N-th weight version (one per learned event or batch): a forget with weights "
                    "replays from the newest kept version before what it forgets, so at most about N events more "
                    "than it must; 0 keeps only the newest keep_versions",
    )
    forget_checkpoint_s: float = Field(
        5.0, ge=0, description="seconds of a forget's replay a killed worker may lose (its progress is saved as often)"
    )
    worker_concurrency: int = Field(1, ge=1, description="processes per worker (learn order is kept per agent)")
    # Learning is background work; a reply is someone waiting (BENCHMARKS.md, "Chat beside a learning worker").
    worker_nice: int = Field(10, ge=0, le=19, description="CPU niceness workers run at, at least (0: as the server)")
    broker_visibility_timeout_s: int = Field(
        3600, gt=0, description="Redis: seconds before a task whose worker died unacknowledged is delivered again"
    )
    task_max_retries: int = Field(8, ge=0, description="retries of a task on transient DB/broker errors")

    @model_validator(mode="after")
    def _absolute_data_dir(self) -> Settings:
        object.__setattr__(self, "data_dir", self.data_dir.expanduser().resolve())
        return self

    def snapshot_dir(self, agent_id: int) -> Path:
        """Where an agent's memory index snapshot lives (`MemoryStore.open(snapshot=...)` reads it)."""
        return self.data_dir / "snapshots" / f"agent-{agent_id}"

    @cached_property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'lifelong.db'}"

    @cached_property
    def resolved_broker_url(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{self.data_dir / 'broker.db'}"

    @property
    def embedded(self) -> bool:
        """True when no external broker is configured (the worker may run inside the serving command)."""
        return self.broker_url is None
