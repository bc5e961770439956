"""The operator's admin key: restored at start whatever happened to it, so they are never locked out."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from agent.auth import configured_admin_key_hash, ensure_admin_key, hash_key, lookup
from memory.schema import ApiKey
from settings import Settings
from tests.dbs import db_url, empty_db_url, sessions  # noqa: F401 - the fixtures


def test_a_revoked_configured_admin_key_works_again_after_a_restart(sessions, tmp_path):
    settings = Settings(data_dir=tmp_path, admin_key="ll_operator-key")
    ensure_admin_key(settings, sessions)
    with sessions.begin() as db:
        row = db.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key("ll_operator-key")))
        row.revoked_at = datetime.now(UTC)  # as a DELETE /v1/keys/{id} of an earlier version did
    with sessions() as db:
        assert lookup(db, "ll_operator-key") is None
    ensure_admin_key(settings, sessions)  # the next start
    with sessions() as db:
        principal = lookup(db, "ll_operator-key")
    assert principal is not None and principal.agent_id is None
    assert configured_admin_key_hash(settings) == hash_key("ll_operator-key")


def test_a_generated_admin_key_is_the_configured_one(sessions, tmp_path):
    settings = Settings(data_dir=tmp_path)
    path = ensure_admin_key(settings, sessions)
    assert configured_admin_key_hash(settings) == hash_key(path.read_text().strip())
