"""API keys: random bearer tokens, stored as SHA-256 hashes only; admin keys or keys scoped to one agent."""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from memory.schema import ApiKey
from settings import Settings

log = logging.getLogger(__name__)

KEY_PREFIX = "ll_"
ADMIN_KEY_FILE = "admin.key"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Principal:
    """Who is calling: an admin key (agent_id None) or a key scoped to one agent."""

    key_id: int
    agent_id: int | None

    @property
    def is_admin(self) -> bool:
        return self.agent_id is None

    def can_access(self, agent_id: int) -> bool:
        return self.agent_id is None or self.agent_id == agent_id


def issue_key(db: Session, *, agent_id: int | None, name: str = "") -> tuple[ApiKey, str]:
    """A new key in the caller's transaction; the key itself is returned once and never stored."""
    key = new_key()
    row = ApiKey(key_hash=hash_key(key), agent_id=agent_id, name=name)
    db.add(row)
    db.flush()
    return row, key


def lookup(db: Session, key: str) -> Principal | None:
    row = db.execute(select(ApiKey.id, ApiKey.agent_id).where(
        ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None))).first()
    return None if row is None else Principal(key_id=row.id, agent_id=row.agent_id)


def ensure_admin_key(settings: Settings, sessions: sessionmaker[Session]) -> Path | None:
    """Make the admin key usable; returns the file holding it when it was generated (not from settings).

    From settings (LIFELONG_ADMIN_KEY) when set; otherwise generated once into data_dir/admin.key
    (mode 0600, created exclusively so two starting processes cannot write different keys).
    """
    path = None
    key = settings.admin_key
    if key is None:
        path = settings.data_dir / ADMIN_KEY_FILE
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            key = path.read_text().strip()
        else:
            key = new_key()
            with os.fdopen(descriptor, "w") as file:
                file.write(key + "\n")
    try:
        with sessions.begin() as db:
            row = db.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(key)))
            if row is None:
                db.add(ApiKey(key_hash=hash_key(key), agent_id=None, name="admin"))
            elif row.revoked_at is not None or row.agent_id is not None:
                # The operator's own key works again at start, whatever happened to it before.
                row.revoked_at, row.agent_id = None, None
    except IntegrityError:  # another process starting at the same moment stored it first
        pass
    return path


def configured_admin_key_hash(settings: Settings) -> str | None:
    """The hash of the admin key this server was started with (settings, or the generated file)."""
    if settings.admin_key is not None:
        return hash_key(settings.admin_key)
    path = settings.data_dir / ADMIN_KEY_FILE
    return hash_key(path.read_text().strip()) if path.exists() else None
